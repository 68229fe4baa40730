"""Train, export and evaluate the liveness (anti-spoofing) model on NUAA.

One run, fixed seed, a few minutes on a 2-core CPU:

    python -m kiosk.training.liveness --data ../shared/data/nuaa_train --out kiosk/models

Subjects are never split between training and evaluation. The subjects in
TEST_SUBJECTS (data.py) are held out for the final report; the others train
the shipped model. The steps:

1. prepare (data.py): every frame through the door's own front end
   (kiosk.face.FaceFinder, kiosk.face.crop_face at INPUT_SIZE with some
   context for augmentation), and the motion cue (kiosk.liveness.MotionCue)
   over each attempt. Each NUAA session (ID_glasses_pos_session, frames in
   frame-number order) is cut into attempts of ATTEMPT_FRAMES to
   2 * ATTEMPT_FRAMES - 1 consecutive frames.
2. validate (run.py, fusion.py): INNER_FOLDS over the training subjects: a
   texture CNN (model.py) trained without a fold's subject scores that
   subject, so every training subject gets honest held-out scores. On those
   the texture threshold is chosen (lowest ACER, centre of the best interval)
   and the fusion with the motion cue is fitted.
3. train and export (model.py, export.py): the shipped CNN on all training
   subjects, full-int8 TFLite (TFLITE_BUILTINS_INT8, int8 in and out),
   checked in every installed TFLite runtime against the float model.
4. evaluate (evaluate.py, metrics.py, report.py): the held-out subjects
   through the runtime class itself (kiosk.liveness.LivenessChecker on the
   int8 file): APCER, BPCER and ACER at the shipped thresholds, what it costs
   a live person at the door, the time per face, a Markdown report with
   histograms and a DET curve.

Training is plain Keras 3 (any backend); the int8 export needs TensorFlow.
"""
