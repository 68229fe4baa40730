"""``liveness-report.md``: rates by left-out session and subject, per subject, the door's view, cost, limits; a DET plot beside it."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np

from kiosk.training.liveness.data import ATTEMPT_FRAMES, DATA_TERMS, TEST_SUBJECTS
from kiosk.training.liveness.metrics import det_points, equal_error_rate

REPORT_FILE = "liveness-report.md"
DET_FILE = "liveness-det.png"
MODES = {"reference": "MiniFASNet float (teacher, ONNX)", "texture": "int8 student (the verdict of `texture` and `both`)",
         "texture_fitted": "int8 student, threshold fitted on the training part"}
SPLITS = {"session": "leave one capture session out", "subject": "leave one subject out"}
SPLIT_STUDENTS = {
    "session": "**Clean protocol:** the student columns of each left-out session come from a student trained without "
               "any frame of that session (the other session, the photos, their replays and prints). This is the figure "
               "the model is chosen by.",
    "subject": "**Not a clean student figure:** the student columns come from the shipped student, trained on *every* "
               "NUAA frame, the left-out subject's included (nine per-subject students would not fit the CPU budget); "
               "only the fitted threshold is fitted without the subject. The teacher's column is clean.",
}


def _pct(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


def _det_plot(splits: dict, out: Path) -> None:
    """DET curves (probit axes) of every mode on the pooled left-out attempts of each split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normal = NormalDist()

    def deviate(rates: np.ndarray) -> np.ndarray:
        return np.array([normal.inv_cdf(min(max(r, 5e-4), 1 - 5e-4)) for r in rates])

    figure, axes = plt.subplots(1, 2, figsize=(12, 6))
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    for axis, (split, title) in zip(axes, SPLITS.items()):
        scores = splits[split]["scores"]
        live = np.array(scores["live"])
        for mode in ("reference", "texture"):
            values = np.array(scores[mode])
            apcer, bpcer = det_points(live, values)
            axis.plot(deviate(apcer), deviate(bpcer), label=f"{MODES[mode]}, EER {_pct(equal_error_rate(live, values))}")
        axis.set_xticks(deviate(np.array(ticks)), [f"{t:g}" for t in ticks])
        axis.set_yticks(deviate(np.array(ticks)), [f"{t:g}" for t in ticks])
        axis.set_xlabel("APCER (print attacks accepted)")
        axis.set_ylabel("BPCER (live attempts refused)")
        axis.set_title(f"NUAA, {title}: left-out attempts")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / DET_FILE, dpi=90)
    plt.close(figure)


def _split_tables(splits: dict) -> list[str]:
    lines = []
    for split, title in SPLITS.items():
        result = splits[split]
        pooled = result["pooled"]
        lines += [f"### {title[0].upper()}{title[1:]}", "",
                  f"{pooled['texture']['bona_fide_presentations']} live and {pooled['texture']['attack_presentations']} "
                  "print-attack attempts, each scored without its part. " + SPLIT_STUDENTS[split] + " In mode `both` the "
                  f"face must also be seen to move: it was in {_pct(pooled['moved']['live'])} of the live and "
                  f"{_pct(pooled['moved']['attack'])} of the print attempts' {ATTEMPT_FRAMES}-9 sparse frames (NUAA keeps "
                  "about one frame in three; at the door the wait is up to `liveness_wait_seconds` at 15 fps).", "",
                  "| mode | APCER | BPCER | ACER |", "|---|---|---|---|"]
        lines += [f"| {MODES[m]} | {_pct(pooled[m]['apcer'])} | {_pct(pooled[m]['bpcer'])} | {_pct(pooled[m]['acer'])} |"
                  for m in MODES]
        lines += ["", "| left out | " + " | ".join(f"{MODES[m]} APCER / BPCER" for m in MODES) + " | live / attack attempts |",
                  "|---" * (len(MODES) + 2) + "|"]
        for part, rates in result["parts"].items():
            lines.append(f"| {split} {part} | " + " | ".join(f"{_pct(rates[m]['apcer'])} / {_pct(rates[m]['bpcer'])}" for m in MODES)
                         + f" | {rates['texture']['bona_fide_presentations']} / {rates['texture']['attack_presentations']} |")
        lines += ["", "Per subject (pooled over the left-out parts; the worst subject is what a resident meets):", "",
                  "| subject | " + " | ".join(f"{MODES[m]} APCER / BPCER" for m in MODES) + " | live / attack attempts |",
                  "|---" * (len(MODES) + 2) + "|"]
        for subject, rates in result["per_subject"].items():
            lines.append(f"| {subject} | " + " | ".join(f"{_pct(rates[m]['apcer'])} / {_pct(rates[m]['bpcer'])}" for m in MODES)
                         + f" | {rates['texture']['bona_fide_presentations']} / {rates['texture']['attack_presentations']} |")
        worst = max(r["texture"]["bpcer"] for r in result["per_subject"].values() if r["texture"]["bona_fide_presentations"])
        lines += ["", f"Worst subject, int8 student: {_pct(worst)} of live attempts refused.", ""]
    return lines


def _model_paragraph(metadata: dict) -> str:
    shipped = metadata["metrics"]["choice"]["shipped"]
    what = ("The shipped texture cue is an **int8 ReLU student of MiniFASNet**" if shipped == "student" else
            "The shipped texture cue is **MiniFASNet** itself, float32 (the int8 student missed a target, see below)")
    return (f"{what}. MiniFASNet (minivision-ai's Silent-Face-Anti-Spoofing, Apache-2.0) is two 80x80 CNNs on wide "
            "context crops (2.7x and 4.0x the Haar face box), converted from their ONNX files by the project's tool; it "
            "never saw NUAA. Its int8 export is slow (int8 PReLU), so the tool builds students: the same networks with "
            "ReLU for PReLU, started from the converted weights and trained (`kiosk.training.liveness.distil`) on two "
            "targets: the float teacher's logits and the truth (live or attack). Their inputs: NUAA frames (live and "
            "print), LFW and CelebA photos (live faces from many cameras), synthetic screen replays of those photos, and "
            "the photos printed and held up at any distance (the teacher takes a small print held far away for a live "
            "face), with light, white-balance, blur and shift augmentation; then exported full int8. **NUAA frames are "
            "not unseen by a student**: the cross-session figures below use students trained without the left-out "
            "session. The texture threshold is MiniFASNet's own (mean 'real' probability 0.5), fixed before "
            "any NUAA frame was scored.")


def _choice_paragraph(choice: dict) -> str:
    targets, measured = choice["targets"], choice["measured"]
    return (f"**Choice: the {choice['shipped']} is shipped.** Targets (leave one session out): ACER <= "
            f"{_pct(targets['acer'])} (measured {_pct(measured['acer'])}), BPCER <= {_pct(targets['bpcer'])} (measured "
            f"{_pct(measured['bpcer'])}), worst subject's live attempts refused <= {_pct(targets['worst_subject_bpcer'])} "
            f"(measured {_pct(measured['worst_subject_bpcer'])}), synthetic screens accepted no more "
            f"often than by the teacher, and the whole `both` check <= {targets['both_ms']:g} ms per face (measured "
            f"{measured['both_ms']:.2f} ms).")


def write_report(metadata: dict, splits: dict, out: Path) -> Path:
    """Write the report and its DET plot to ``out``; returns the report's path."""
    _det_plot(splits, out)
    metrics, timing, export = metadata["metrics"], metadata["timing"], metadata["export_check"]
    synthetic, door, movement, photos = metrics["synthetic_attacks"], metrics["door"], metadata["movement"], metrics["photos"]
    conversion = metadata["conversion_check"]
    lines = [
        "# Liveness (anti-spoofing) report", "",
        f"Written by `python -m kiosk.training.liveness` on {metadata['built_at']} ({metadata['machine']}).", "",
        _model_paragraph(metadata), "",
        f"An attempt is {ATTEMPT_FRAMES} to {2 * ATTEMPT_FRAMES - 1} consecutive frames of one NUAA recording. APCER: print "
        "attacks accepted as live; BPCER: live attempts refused; ACER: their mean (ISO/IEC 30107-3).", "",
        "## Validation that predicts unseen sessions and people", "",
        "NUAA's two capture sessions (`..._01_...` and `..._02_...` in the file names) differ in day, place and light. "
        "Leave one session out: fit on one, score the other, and the reverse. Leave one subject out: nine folds.", "",
    ] + _split_tables(splits) + [
        f"![DET curves]({DET_FILE})", "",
        "## The shipped file at the door's rules", "",
        f"Through `kiosk.liveness.LivenessChecker` on the sessions of subjects {', '.join(TEST_SUBJECTS)} (frames back "
        f"to back): APCER {_pct(metrics['test']['texture']['apcer'])}, BPCER {_pct(metrics['test']['texture']['bpcer'])} "
        f"per attempt; in mode `both` live people pass at the first verdict in {_pct(door['live_pass_first_verdict'])} of "
        f"{door['live_starts']} starts and by the second in {_pct(door['live_pass_by_second_verdict'])}; a held-up print "
        f"passes within five verdicts in {_pct(door['spoof_pass_within_5_verdicts'])} of {door['spoof_starts']} starts.", "",
        f"Motion in mode `both`: the texture verdict is given once the face has been seen to move "
        f"{movement['min_measurements']} times (corners tracked on the face, a median movement of "
        f"{metadata['motion']['min_shift']:g} face widths each). Motion never changes the score: a replayed video moves "
        "like a live face, so a motion bonus lets a screen through (it opened the red team's tablet replay, 11f), and a "
        "live face that sits still can move as rigidly as a photo, so a planar-motion veto refuses residents (5.4% of "
        "live attempts from an unseen capture session in the previous model's report). What motion adds is the rule "
        "that a face that does not move stays PENDING (refused after the wait): a still photo or a still phone screen.", "",
        "## Fitting the threshold to the door's camera", "",
        f"Every camera enrolment (`kiosk enroll NAME --camera`, the button) records the liveness score of each frame of "
        "the new person's capture, which passes the liveness check itself under an admin's eye: the door's own live faces "
        f"in its own light. Once {metadata['adaptation']['min_people']} enrolments hold {metadata['adaptation']['min_scores']} "
        f"scores, the door lowers the threshold to their {metadata['adaptation']['live_quantile']:.0%} quantile when that is "
        f"lower (a camera or light in which live faces score low), never by more than **{metadata['adaptation']['max_lowering']:g} "
        f"logits**: {metadata['adaptation']['margin']:g} logit above the highest-scoring attack measured ({metadata['adaptation']['highest_attack_score']:.2f}: "
        "the left-out-session print attempts and the 99th percentile of the synthetic replay and print frames below). The "
        "threshold is never raised, and an enrolment cannot carry a photo's scores in: it must pass the check first.", "",
        "## Screens and distant prints (synthetic)", "",
        f"No real screen replay is in the data, and NUAA's prints are all held close to the camera. "
        f"{synthetic['replay']['student']['rendered']} live frames of NUAA subjects {', '.join(TEST_SUBJECTS)} (up to 36 each) "
        "were re-rendered as a phone "
        f"held up to the camera ({', '.join(synthetic['replay']['student']['effects'])}: a black or bright bezel around the "
        "screen, reduced gamut and lifted blacks, a pixel grid beating into moire, a specular glare, resampling and blur) "
        f"and as a print held up at 30-95% of the frame's width in front of another subject's frame "
        f"({', '.join(synthetic['print']['student']['effects'])}), and scored per frame where the face is large enough "
        "for the door to judge (a smaller one is no attempt):", "",
        "| attack | model | faces found | accepted (frames) | worst subject | median logit |", "|---|---|---|---|---|---|",
    ] + [f"| {kind} | {name} | {r['faces_found']} | **{r['accepted_frames']}** ({_pct(r['apcer_frames'])}) | "
         f"{_pct(r['worst_subject_apcer'])} | {r['median_logit']:.1f} |" for kind, by_model in synthetic.items()
         for name, r in by_model.items()] + [
        "",
        "The students were trained on replays and prints of LFW and CelebA photos and on prints of the other NUAA "
        "subjects' live frames (the same renderers), never on renderings of these subjects' frames. These are the "
        "listed effects, not a real phone's optics, reflections or refresh, "
        "nor real paper: a real recording is the test that counts. A still phone screen or print gives no motion and is "
        "refused by `both` (PENDING until the wait ends).", "",
        "## Live faces from other cameras", "",
        f"{photos['counts']['photos']} LFW and CelebA photos of people never trained on, and {photos['counts']['replays']} "
        f"synthetic replays and {photos['counts']['prints']} prints of them, through the door's front end (the check "
        "against learning 'the NUAA webcam = spoof'): share judged live per frame.", "",
        "| model | " + " | ".join(k for k in photos["teacher"]) + " |", "|---" * (len(photos["teacher"]) + 1) + "|",
    ] + [f"| {name} | " + " | ".join(_pct(v) for v in rates.values()) + " |" for name, rates in photos.items() if name != "counts"] + [
        "",
        "## Conversion, export and cost", "",
        f"- Keras model rebuilt node by node from the ONNX graphs (`kiosk.training.liveness.minifasnet`), against the ONNX "
        f"files run by `cv2.dnn.readNetFromONNX` on {conversion['faces']} NUAA context crops: max |logit difference| "
        f"{conversion['max_abs_logit_error']:.2g}, decisions {_pct(conversion['decision_agreement'])} alike.",
        f"- MiniFASNet float32 TFLite ({export['teacher_float32']['bytes'] / 1024:.0f} KiB): max |logit error| "
        f"{export['teacher_float32']['max_abs_logit_error']:.2g} against ONNX, {export['teacher_float32']['ms_per_face']:.2f} ms "
        "per face (both networks, one thread, best of 3).",
        f"- MiniFASNet full int8: decisions {_pct(export['teacher_int8']['decision_agreement'])} alike the float model, "
        f"**{export['teacher_int8']['ms_per_face']:.2f} ms** per face: its 66 int8 PReLU layers run outside XNNPACK's fast "
        "kernels. Hence the ReLU students.",
        f"- Shipped candidate, the int8 ReLU student ({export['student_int8']['bytes'] / 1024:.0f} KiB, TFLITE_BUILTINS_INT8, "
        f"int8 in and out): against its own float model max |logit error| {export['student_int8']['max_abs_logit_error']:.2f} "
        f"(mean {export['student_int8']['mean_abs_logit_error']:.2f}), decisions "
        f"{_pct(export['student_int8']['decision_agreement'])} alike; {export['student_int8']['ms_per_face']:.2f} ms per face.",
        "- Students against the teacher (int8 student vs float teacher, per-frame decisions):", "",
        "| student | distilled on | loss first / last | int8 vs own float, decisions | vs teacher, decisions | on | mean abs logit error |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {part} | {st['distilled_on']} | {st['loss']['first_loss']:.3f} / {st['loss']['last_loss']:.3f} | "
         f"{_pct(st['int8_check']['decision_agreement'])} | {_pct(st['against_teacher']['decision_agreement'])} | "
         f"{st['against_teacher']['on']} | {st['against_teacher']['mean_abs_logit_error']:.2f} |"
         for part, st in metrics["students"].items()] + [
        "",
        "- The whole check per face (after detection: crops, CNNs, and for `both` the corner tracking), one thread, "
        f"{timing['student']['texture']['calls']} held-out frames "
        "played through each model in turn, 5 times; the best repeat (the machine is shared):", "",
        "| model | `texture` median / p90 | `both` median / p90 |", "|---|---|---|",
    ] + [f"| {name} | {timing[name]['texture']['median_ms']:.2f} / {timing[name]['texture']['p90_ms']:.2f} ms | "
         f"{timing[name]['both']['median_ms']:.2f} / {timing[name]['both']['p90_ms']:.2f} ms |" for name in ("student", "teacher")] + [
        "", _choice_paragraph(metrics["choice"]), "",
        "## Limits", "",
        "- NUAA: 9 subjects, one webcam, one kind of printer, two sessions; every rate above has a wide uncertainty "
        "(one live attempt of a subject is about 1 in 8 of theirs).",
        "- Screen replays measured only synthetically (above); masks, cut-out photos and curved prints are not measured.",
        "- Haar boxes are used as MiniFASNet's boxes without a fitted mapping to its RetinaFace boxes.", "",
        "## Data, weights and terms", "",
        f"{DATA_TERMS}. LFW (Huang et al., UMass Amherst) and CelebA (Liu et al., CUHK, non-commercial research use) "
        "photos for the distillation only; no image is shipped. MiniFASNet weights: Copyright minivision-ai, Apache License 2.0 (`LICENSE-MiniFASNet`). Rebuild "
        "with `python -m kiosk.training.liveness --data ../shared/data/nuaa_train --faces ../shared/data --minifasnet "
        "../shared/models/minifasnet --out kiosk/models`.", "",
    ]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return path
