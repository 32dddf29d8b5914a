"""lmms-eval's entry point (group `lmms_eval.models`): `--model fastervlm` resolves to FasterVLMLmms.

Kept import-light: lmms-eval loads every entry point when it builds its model registry.
"""

from lmms_eval.models.registry_v2 import ModelManifest

MANIFEST = ModelManifest(model_id="fastervlm", simple_class_path="fastervlm.eval.lmms_model.FasterVLMLmms")
