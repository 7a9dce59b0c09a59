"""The pipeline as plain Python, under the node classes: it runs and is tested without ComfyUI.

- stages, one module each: ``director``, ``keyframes``, ``motion``, ``gate``, ``voice``, ``music``,
  ``mix``, ``assemble`` (each renders every shot under one residency of its model);
- their libraries: ``reel`` (the REEL value), ``rundir`` (the run folder, atomic keyed artifacts),
  ``stage`` (jobs, resuming, the report), ``retry`` (the critic's remedies), ``audio`` (placement,
  ducking, mastering), ``video`` (clips, assembly, probing), ``comfy`` (progress, cancel and folders,
  from ComfyUI when it is there), ``backends`` and ``widgets`` (what each loader offers);
- the headless pipeline ``headless`` and its command line ``cli``.

Modules here import ``model_loaders`` and each other, never a node module (``nodes/*.py``).
"""
