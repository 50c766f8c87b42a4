"""Official checkpoint layouts: converters between the published key names and vdlearn's modules.

One call loads a whole official VideoCrafter checkpoint as a pipeline::

    from vdlearn.pretrained import load_pipeline, PRETRAINED
    pipe = load_pipeline("videocrafter2_t2v_512")   # or videocrafter1_t2v_1024, videocrafter1_i2v_512

(:mod:`vdlearn.pretrained.checkpoints`; the checkpoints' files and settings are in
:mod:`vdlearn.pretrained.registry`). LaVie's cascade loads from its local files with
``load_lavie_pipeline("pretrained_models")`` (:mod:`vdlearn.pretrained.lavie_pipeline`). ``load_pipeline`` and ``PRETRAINED`` are imported on
first use, so importing one converter module stays light.
"""

_LAZY = {"load_pipeline": "vdlearn.pretrained.checkpoints", "PRETRAINED": "vdlearn.pretrained.registry",
         "PretrainedSpec": "vdlearn.pretrained.registry", "CheckpointNotFoundError": "vdlearn.pretrained.hub",
         "load_lavie_pipeline": "vdlearn.pretrained.lavie_pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vdlearn.pretrained' has no attribute {name!r}")


__all__ = list(_LAZY)
