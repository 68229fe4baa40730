"""``liveness-report.md``: the measured rates, the door's view, the cost per face and the limits, with plots beside it."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np

from kiosk.liveness import MODEL_FILE
from kiosk.training.liveness.data import ATTEMPT_FRAMES, DATA_TERMS, INPUT_SIZE, SCREEN_REPLAYS, TEST_SUBJECTS
from kiosk.training.liveness.evaluate import DOOR_VERDICT_EVERY, Evaluation
from kiosk.training.liveness.metrics import det_points, equal_error_rate, error_rates

REPORT_FILE = "liveness-report.md"


def _plots(evaluation: Evaluation, thresholds: dict[str, float], out: Path) -> dict[str, str]:
    """Score histograms and the DET curve as PNG files next to the report; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = evaluation.table
    names = {"hist": "liveness-histograms.png", "det": "liveness-det.png"}
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    has = np.isfinite(table.motion)
    panels = [("texture score (mean logit)", table.texture, table.live, thresholds["texture"]),
              ("motion score (mean log residual ratio)", table.motion[has], table.live[has], None),
              ("fused score", evaluation.fused, table.live, thresholds["both"])]
    for axis, (title, scores, live, threshold) in zip(axes, panels):
        bins = np.linspace(scores.min(), scores.max(), 30)
        axis.hist(scores[live], bins, alpha=0.6, label=f"live ({live.sum()})", color="tab:green")
        axis.hist(scores[~live], bins, alpha=0.6, label=f"print attack ({(~live).sum()})", color="tab:red")
        if threshold is not None:
            axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
        axis.set_title(title)
        axis.set_xlabel("score (higher: more live)")
        axis.set_ylabel("attempts")
        axis.legend()
    figure.suptitle(f"Held-out subjects {', '.join(TEST_SUBJECTS)}: attempt scores")
    figure.tight_layout()
    figure.savefig(out / names["hist"], dpi=90)
    plt.close(figure)

    normal = NormalDist()
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]

    def deviate(rates: np.ndarray) -> np.ndarray:
        return np.array([normal.inv_cdf(min(max(r, 5e-4), 1 - 5e-4)) for r in rates])

    figure, axis = plt.subplots(figsize=(6, 6))
    curves = [("texture (per attempt)", table.live, table.texture), ("texture (per frame)", evaluation.frame_live, evaluation.frame_logits),
              ("motion (attempts with a measurement)", table.live[has], table.motion[has]), ("fused (per attempt)", table.live, evaluation.fused)]
    for label, live, scores in curves:
        apcer, bpcer = det_points(live, scores)
        axis.plot(deviate(apcer), deviate(bpcer), label=f"{label}, EER {100 * equal_error_rate(live, scores):.1f}%")
    for name, live, scores, threshold in (("texture", table.live, table.texture, thresholds["texture"]),
                                          ("fused", table.live, evaluation.fused, thresholds["both"])):
        rates = error_rates(live, scores, threshold)
        axis.plot(deviate(np.array([rates["apcer"]])), deviate(np.array([rates["bpcer"]])), "o", label=f"{name} at shipped threshold")
    axis.set_xticks(deviate(np.array(ticks)), [f"{100 * t:g}%" for t in ticks])
    axis.set_yticks(deviate(np.array(ticks)), [f"{100 * t:g}%" for t in ticks])
    limits = deviate(np.array([5e-4, 0.6]))
    axis.set_xlim(*limits)
    axis.set_ylim(*limits)
    axis.set_xlabel("APCER (print attacks accepted; 0 is drawn at 0.05%)")
    axis.set_ylabel("BPCER (live people rejected; 0 is drawn at 0.05%)")
    axis.set_title("DET, held-out NUAA subjects")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(out / names["det"], dpi=90)
    plt.close(figure)
    return names


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def write_report(metadata: dict, evaluation: Evaluation, out: Path) -> Path:
    """``liveness-report.md`` with the plots beside it."""
    names = _plots(evaluation, metadata["threshold"], out)
    metrics = metadata["metrics"]
    test, validation, door, timing = metrics["test"], metrics["validation"], metrics["door"], metadata["timing"]
    rows = []
    for mode in ("texture", "both"):
        r = test[mode]
        rows.append(f"| `{mode}` | {metadata['threshold'][mode]:.3f} | {_pct(r['apcer'])} | {_pct(r['bpcer'])} | {_pct(r['acer'])} "
                    f"| {_pct(validation[mode]['acer'])} |")
    per_subject = "\n".join(
        f"| {s} | {_pct(v['texture']['apcer'])} / {_pct(v['texture']['bpcer'])} | {_pct(v['both']['apcer'])} / {_pct(v['both']['bpcer'])} "
        f"| {v['both']['bona_fide_presentations']} / {v['both']['attack_presentations']} |"
        for s, v in metrics["test_per_subject"].items())
    checks = "; ".join(f"{c['runtime']}: logit error max {c['max_abs_logit_error']:.3f}, mean {c['mean_abs_logit_error']:.3f}, "
                       f"same side of 0 on {_pct(c['sign_agreement'])}" for c in metadata["export_check"])
    fusion = metadata["fusion"]
    text = f"""# Liveness (anti-spoofing) report

Written by `python -m kiosk.training.liveness` on {metadata['trained_at']} ({metadata['machine']}).
Everything below is measured on NUAA subjects **{', '.join(TEST_SUBJECTS)}**, held out from training,
from the fusion fit and from the choice of thresholds, through the runtime class
`kiosk.liveness.LivenessChecker` on the shipped int8 file `{MODEL_FILE}`.

**Not covered: {SCREEN_REPLAYS}**

## Results at the shipped thresholds (ISO/IEC 30107-3)

An attempt is {ATTEMPT_FRAMES} to {2 * ATTEMPT_FRAMES - 1} consecutive frames of one NUAA session
({test['both']['bona_fide_presentations']} bona fide and {test['both']['attack_presentations']} print-attack attempts).
APCER: attack presentations accepted as live (one attack instrument species: printed photo); BPCER:
live presentations rejected; ACER: their mean (kept for comparison with the literature; the 2023 edition
of ISO/IEC 30107-3 reports APCER and BPCER separately, as here).

| mode | threshold | APCER | BPCER | ACER | ACER on validation subjects |
|---|---|---|---|---|---|
{chr(10).join(rows)}

The last column is a second estimate: the {validation['both']['bona_fide_presentations']} live and
{validation['both']['attack_presentations']} attack attempts of the six training subjects, each scored by a CNN trained on
the other five. The texture threshold and the fusion were fitted on these very scores, so they are not an
independent test, but each of those CNNs saw one subject fewer than the shipped one: read the two
estimates together, and do not expect every new person, camera and room to do as well as the three held-out
subjects. Validation `texture` APCER
{_pct(validation['texture']['apcer'])}, BPCER {_pct(validation['texture']['bpcer'])}; `both` APCER
{_pct(validation['both']['apcer'])}, BPCER {_pct(validation['both']['bpcer'])}.

Per frame (texture CNN alone at the texture threshold, one frame = one decision): APCER {_pct(metrics['test_frames']['apcer'])},
BPCER {_pct(metrics['test_frames']['bpcer'])}, EER {_pct(metrics['test_frames']['eer'])}
({metrics['test_frames']['bona_fide_presentations']} live and {metrics['test_frames']['attack_presentations']} attack frames).
Equal error rates per attempt: texture {_pct(metrics['test_eer']['texture'])}, motion alone
{_pct(metrics['test_eer']['motion'])} (on the {metrics['test_eer']['motion_attempts']} attempts where it measured something),
fused {_pct(metrics['test_eer']['both'])}.

Per held-out subject (APCER / BPCER per attempt):

| subject | texture | both | live / attack attempts |
|---|---|---|---|
{per_subject}

![score histograms]({names['hist']})

![DET curve]({names['det']})

## What a live person pays at the door (mode `both`)

The decision can grant at the earliest on the {DOOR_VERDICT_EVERY}rd frame with a face, and asks the
liveness verdict then; a `False` is logged as `spoof` and the attempt restarts, so the next verdict
comes {DOOR_VERDICT_EVERY} frames later. Following each held-out attempt start to the end of its session:

- live people pass at the first verdict in **{_pct(door['live_pass_first_verdict'])}** of {door['live_starts']} starts,
  so **{_pct(1 - door['live_pass_first_verdict'])}** need a second look (about {DOOR_VERDICT_EVERY} more frames, 0.2 s
  at 15 fps, plus a `spoof` line in the event log); {_pct(door['live_pass_by_second_verdict'])} pass by the second verdict;
  {_pct(door['live_never_pass_in_session'])} never pass within their session;
- a print attack held up for as long as the session lasts passes at the first verdict in
  {_pct(door['spoof_pass_first_verdict'])} and within five verdicts (the lockout budget: 5 refusals lock the
  door out for 5 minutes) in **{_pct(door['spoof_pass_within_5_verdicts'])}** of {door['spoof_starts']} starts.

Five refused attempts within five minutes lock the door out, for live people too: a person rejected
five times in a row would be locked out (the event log says `spoof`).

## Cost per face

Target: at most 5 ms per face on a 2-core CPU. {timing['machine']}, {timing['note']}:
`texture` median {timing['texture']['median_ms']:.2f} ms (p90 {timing['texture']['p90_ms']:.2f} ms),
`both` median {timing['both']['median_ms']:.2f} ms (p90 {timing['both']['p90_ms']:.2f} ms) per face, on top of
detection and the encoder (the crop, the int8 CNN, and for `both` the corner tracking).
The CNN is about {metadata['model']['macs'] / 1e6:.0f} M multiply-accumulates, the file {metadata['tflite_bytes'] / 1024:.0f} KiB.

## How it works

- **Texture cue**: a 4-layer CNN on the shared face crop (`kiosk.face.crop_face`, {INPUT_SIZE}x{INPUT_SIZE} RGB)
  gives a logit per frame (> 0: live); the attempt's texture score is the mean logit of its frames.
  Trained on subjects {', '.join(metadata['data']['training_subjects'])} with shifts, zooms, small rotations,
  flips and wide colour changes (white balance, saturation, gamma, brightness: otherwise the CNN learns each
  subject's room light); full-int8 export ({checks}).
- **Motion cue** (`kiosk.liveness.MotionCue`): corners on the inner face box are tracked from a reference
  frame until they have moved {metadata['motion']['min_shift']:g} face widths; then one homography is fitted
  to all tracks and the score is log(90th-percentile residual / median movement). A printed photo,
  even tilted or slightly bent, moves as a plane and fits the homography (held-out attempts: median
  {metrics['motion_medians']['spoof']:.2f}); a live face (depth, blinks, expression) leaves a residual (median
  {metrics['motion_medians']['live']:.2f}). A face or photo held perfectly still gives no measurement, and the verdict
  is then the texture verdict. A live head that only slides sideways would also move almost as a plane:
  NUAA's live people mostly sit still, so how often that happens at a real door is not measured.
- **Fusion** (`kiosk.liveness.Fusion`), in texture-logit units with threshold 0:
  `fused = texture - ({metadata['threshold']['texture']:.3f})`, plus
  `{fusion['motion_weight']:.3f} * clip(mean motion, {fusion['motion_range'][0]:.2f}, {fusion['motion_range'][1]:.2f}) + ({fusion['motion_offset']:.3f})`
  once the motion cue has made {fusion['min_measurements']} measurements (one is too noisy). Until then the verdict of
  `both` is the `texture` verdict. The motion weight comes from a logistic model fitted on the validation
  attempts with enough measurements, its offset puts 0 at the centre of their lowest-ACER interval, and the
  clip's upper end lets live-looking motion add at most {fusion['max_motion_bonus']:g} logits (enough to rescue a
  borderline texture score, never a clearly printed one), while planar motion can pull the score down fully.
- **Texture threshold**: the lowest ACER on the validation subjects' out-of-fold attempt scores (one texture
  CNN per training subject, trained without that subject), at the centre of the best interval.

## Limits and what is needed next

- **Screen replays are not covered.** NUAA has printed photos only. A phone or tablet showing a photo or video
  of the enrolled person has other texture (moire, pixel grid, backlight, specular glare) that this CNN
  never saw, and a replayed *video* moves like a live face, so the motion cue does not help against it. To
  cover replays: training and test data with screen attacks (e.g. Idiap Replay-Attack, CASIA-FASD,
  OULU-NPU, or recordings of phones and tablets made with the door's own camera), a subject-disjoint
  evaluation per attack instrument species (APCER for the worst species), and possibly a cue a screen
  cannot fake (an infrared camera or an active light/flash challenge).
- **Data**: 9 subjects, one room, one webcam, one kind of printer; {len(TEST_SUBJECTS)} held-out subjects give
  {test['both']['bona_fide_presentations'] + test['both']['attack_presentations']} attempts, so every rate above has a wide
  uncertainty (one attempt is {_pct(1 / max(1, test['both']['attack_presentations']))} of the attacks). Other cameras,
  light and printers (glossy photo paper, high-resolution colour prints) need their own measurement.
- **Frame timing**: the NUAA frames are about 0.6 s apart (every third frame of the official list); the door
  takes 15 frames per second. The motion cue compares with a reference frame until enough movement has
  accumulated, so it waits for motion rather than for frames, but it was measured only on NUAA's spacing.
- **Not measured**: masks, cut-out photos (eyes or mouth cut out to blink through), photos on curved
  surfaces, and attacks by someone who knows the motion cue (holding a photo still defeats it, leaving the texture cue).

## Data and terms

{DATA_TERMS}. Training subjects: {', '.join(metadata['data']['training_subjects'])}; held-out test subjects:
{', '.join(TEST_SUBJECTS)}. Retrain with `python -m kiosk.training.liveness --data ../shared/data/nuaa_train --out kiosk/models`
(seed {metadata['training']['seed']}).
"""
    path = out / REPORT_FILE
    path.write_text(text)
    return path

