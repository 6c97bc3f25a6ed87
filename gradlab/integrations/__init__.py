"""Optional integrations, each imported on demand so that ``import gradlab`` needs none of them.

- :mod:`gradlab.integrations.tensorboard`: what ``gradlab.Monitor(tensorboard=...)`` writes
  (extra ``gradlab[tensorboard]``).
- :mod:`gradlab.integrations.lightning`: the ``GradientFlow`` callback (extra
  ``gradlab[lightning]``).
"""
