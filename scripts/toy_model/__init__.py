"""The parts of ``scripts/train_toy_model.py``, which trains the bundled toy CLIP.

``recipe`` holds the fixed choices and the hyper-parameters, ``data`` the training pool and
its captions, ``training`` the loss and the loop, ``evaluation`` the held-out checks a run
must pass and ``artefacts`` what a finished run writes. The script itself is the command
line; it puts the repository on ``sys.path`` before it imports these.
"""
