"""The interface of a model family: everything evl_kd_trainer knows about one VLM architecture, in one place.

A family covers one or more ``config.model_type`` values that share a layout (Qwen2-VL / Qwen2.5-VL / Qwen3-VL;
LLaVA-1.5 / LLaVA-NeXT; PULSE's flat-packed LLaVA-NeXT; SmolVLM) and answers, for the central modules:

* :meth:`ModelFamily.adapter`: the :class:`~evl_kd_trainer.models.base.ModelAdapter` bound to a config (where the
  language model and its decoder layers are, which inputs the model takes, how many visual tokens each image became);
* :meth:`ModelFamily.model_class` / :meth:`ModelFamily.own_processor_classes`: the classes
  :func:`~evl_kd_trainer.models.loading.load_model` / :func:`~evl_kd_trainer.models.loading.load_processor` use
  where the Auto classes would pick the wrong ones;
* :attr:`ModelFamily.chat_templates`, :meth:`ModelFamily.training_template_name`, :meth:`ModelFamily.eval_template`:
  the conversation format for training (with ``{% generation %}`` markers) and for evaluation prompts;
* :attr:`ModelFamily.projector_patterns`: the parameter names of the model's own vision-language projector (for
  ``projector_learning_rate``);
* :meth:`ModelFamily.has_pixel_budget` / :meth:`ModelFamily.set_pixel_budget`: the ``min_pixels`` / ``max_pixels``
  image budget, where the image processor has one;
* :meth:`ModelFamily.check_processor`: refusals of a model / processor pair that would silently change the model.

Built-in families live one per file in :mod:`evl_kd_trainer.models.families` and are found by scanning that package
(:mod:`evl_kd_trainer.models.registry`); a family elsewhere registers itself with
:func:`~evl_kd_trainer.models.registry.register_family`. Every method has a default, so a family states only what
differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # only for annotations: this module stays importable without torch
    from transformers import PretrainedConfig, PreTrainedModel

    from evl_kd_trainer.models.base import ModelAdapter


class ModelFamily:
    """One VLM architecture family. Subclass it in ``models/families/<name>.py`` and decorate with
    :func:`~evl_kd_trainer.models.registry.register_family`; the registry keeps one instance.

    Class attributes:
        name: the registry key (e.g. ``"qwen_vl"``).
        model_types: the ``config.model_type`` values the family's adapters cover.
        adapters: ``model_type -> ModelAdapter`` subclass.
        priority: when several families match a config or processor, the highest wins; a family that refines
            another for some of its configs (PULSE's flat LLaVA-NeXT within LLaVA-NeXT) ranks above it. Equal
            priorities that both match are an error, never a silent choice.
        template_model_types: further model types that are prompted in this family's format although no adapter
            covers them (original LLaVA's ``llava_llama`` configs).
        chat_templates: ``name -> Jinja`` templates the family registers (known to ``get_chat_template``,
            recipes' ``student_chat_template`` / ``teacher_chat_template`` and the evaluation's ``chat_template``).
        replaces_unmarked_template: the family's released templates render the same text as its registered one but
            carry no ``{% generation %}`` markers, so the collator renders with the registered copy instead (a
            warning says so). ``False`` where a processor's own template may be another conversation altogether
            (LLaVA-NeXT also ships with Mistral or Llama-3 language models): it is then replaced only when missing.
        tokenizes_text_between_images: the training view is tokenized as original LLaVA did, the text between
            images piece by piece (:mod:`evl_kd_trainer.data.llava_tokens`).
        conversation_name: how warnings name the family's conversation format.
        projector_patterns: parameter-name fragments of the model's own vision-language projector.
    """

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    adapters: ClassVar[Mapping[str, type[ModelAdapter]]] = {}
    priority: ClassVar[int] = 0
    template_model_types: ClassVar[tuple[str, ...]] = ()
    chat_templates: ClassVar[Mapping[str, str]] = {}
    replaces_unmarked_template: ClassVar[bool] = True
    tokenizes_text_between_images: ClassVar[bool] = False
    conversation_name: ClassVar[str] = ""
    projector_patterns: ClassVar[tuple[str, ...]] = ()

    # --- matching -------------------------------------------------------------------------------
    def matches_config(self, config: PretrainedConfig) -> bool:
        """Whether this family covers ``config`` (by default: its ``model_type`` is one of :attr:`model_types`)."""
        return getattr(config, "model_type", None) in self.model_types

    def processor_classes(self) -> tuple[type, ...]:
        """The processor classes (transformers' own and subclasses) this family's models come with."""
        return ()

    def matches_processor(self, processor: Any) -> bool:
        """Whether ``processor`` belongs to this family (by default: an instance of :meth:`processor_classes`)."""
        classes = self.processor_classes()
        return bool(classes) and isinstance(processor, classes)

    # --- models and processors ----------------------------------------------------------------------
    def adapter(self, config: PretrainedConfig) -> ModelAdapter:
        """The adapter bound to ``config``."""
        return self.adapters[config.model_type](config)

    def model_class(self, config: PretrainedConfig) -> type[PreTrainedModel] | None:
        """The class to load ``config``'s checkpoints with; ``None`` leaves it to ``AutoModelForImageTextToText``."""
        return None

    def own_processor_classes(self) -> tuple[type, ...]:
        """Processor classes of ours that ``AutoProcessor`` does not know: ``load_processor`` reloads a folder
        whose saved ``processor_class`` is one of these by that class."""
        return ()

    def check_processor(self, model: Any, processor: Any, role: str) -> None:
        """Raise a ``ValueError`` naming ``role`` (``"student"`` / ``"teacher"``) when ``model`` and ``processor``
        would run, but not as the model was trained (checks that hold for every family are the trainer's)."""

    # --- conversation format --------------------------------------------------------------------------
    def training_template_name(self, processor: Any) -> str | None:
        """The registered template (a key of :attr:`chat_templates`) with ``{% generation %}`` markers that renders
        ``processor``'s conversation format; by default the first one."""
        return next(iter(self.chat_templates), None)

    def eval_template(self, processor: Any) -> str | None:
        """The template evaluation prompts with by default (``chat_template="auto"``): the processor's own, else
        the family's registered one."""
        own = getattr(processor, "chat_template", None)
        if own:
            return own
        name = self.training_template_name(processor)
        return self.chat_templates[name] if name else None

    # --- image budget ---------------------------------------------------------------------------------
    def has_pixel_budget(self, processor: Any) -> bool:
        """Whether ``processor``'s image processor sizes images by a ``min_pixels`` / ``max_pixels`` area budget."""
        return False

    def set_pixel_budget(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
        """Set the budget on ``processor`` (only called where :meth:`has_pixel_budget`); ``None`` keeps a bound."""
        raise NotImplementedError(f"The {self.name} family has no pixel budget.")

    def __repr__(self) -> str:
        return f"<model family {self.name!r}: {', '.join(self.model_types)}>"


__all__ = ["ModelFamily"]
