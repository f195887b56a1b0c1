"""Models in the platform core: the registry (versions, lineage, aliases) and promotion, shared by every part."""

from mlplatform.models.registry import ModelRegistry, ModelVersion

__all__ = ["ModelRegistry", "ModelVersion"]
