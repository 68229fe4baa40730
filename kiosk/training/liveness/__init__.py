"""Build the liveness (anti-spoofing) model from MiniFASNet's ONNX files and validate it on NUAA.

One run, a few minutes on a 2-core CPU:

    python -m kiosk.training.liveness --data ../shared/data/nuaa_train \\
        --minifasnet ../shared/models/minifasnet --out kiosk/models

The texture cue is MiniFASNet (minivision-ai, Apache-2.0): two 80x80 CNNs
on context crops 2.7 and 4.0 times the face box, converted, then taught
to int8 ReLU students (the teacher's outputs and the truth, on NUAA,
LFW/CelebA photos and synthetic replays and prints of them). NUAA
validates them by left-out session and subject. Mode "both" fits
nothing more: the texture verdict, given once the face has moved
(kiosk.liveness).
The steps:

1. prepare (data.py): every NUAA frame through the door's own front end
   (kiosk.face.FaceFinder, kiosk.liveness.context_crops) and the motion cue
   (kiosk.liveness.MotionCue); sessions cut into attempts of ATTEMPT_FRAMES
   to 2 * ATTEMPT_FRAMES - 1 consecutive frames.
2. convert (minifasnet.py): each ONNX graph rebuilt node by node as a Keras
   model, checked against cv2.dnn.readNetFromONNX; both in one float32
   TFLite file (shipped) and a full-int8 one (checked, not shipped: slower
   on x86 and less exact).
2b. distil (distil.py): ReLU students (PReLU -> ReLU, the converted weights)
   trained on the float teacher's logits and the truth over NUAA, LFW/CelebA
   photos (--faces) and synthetic replays and prints of them; one per
   left-out capture session and one on everything; full int8. The student is shipped only when it meets
   the issue's targets (run.TARGETS), else the float teacher.
3. validate (run.py): leave one capture session out (01/02 in the file
   names) and leave one subject out, each part scored (and, for
   comparison, a texture threshold fitted without it); the ONNX files
   scored beside.
4. evaluate: TEST_SUBJECTS' sessions through
   kiosk.liveness.LivenessChecker (rates, the
   door's view, time per face); synthetic replays and prints (screens.py);
   a Markdown report with per-subject tables and DET curves.

The conversion is plain Keras 3; the TFLite export needs TensorFlow.
"""
