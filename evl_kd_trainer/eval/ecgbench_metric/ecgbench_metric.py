"""ECG-Bench as a Hugging Face ``evaluate`` metric, backed by :func:`evl_kd_trainer.eval.score_ecgbench`.

Load it offline from this folder; the configuration name (or ``split=`` at compute time) selects the split::

    import evaluate
    from evl_kd_trainer.eval import ECGBENCH_METRIC_PATH

    metric = evaluate.load(ECGBENCH_METRIC_PATH, "ptb-xl-super")
    metric.compute(predictions=["NORM"], references=["NORM, STTC"])
"""

import datasets
import evaluate

from evl_kd_trainer.eval.metrics import score_ecgbench
from evl_kd_trainer.eval.splits import split_names

_DESCRIPTION = """\
ECG-Bench (PULSE, Liu et al. 2024) scores a vision-language model's ECG answers: Macro AUC, Macro F1 and
Hamming loss for the multi-label splits (PTB-XL Super, CODE-15%, CPSC-2018), accuracy for the others
(ECG-QA, CSN, G12EC, MMMU-ECG, and the synthetic split of evl_kd_trainer); every value x100. Labels match as
whole labels, classes with a single gold value are left out of the macro AUC and reported, unparseable answers
are counted; `reference_compat=True` reproduces PULSE's reference scorer.
"""

_KWARGS_DESCRIPTION = f"""\
Args:
    predictions (`list[str]`): generated answers.
    references (`list[str]`): gold answers (ECG-QA: also lists of options).
    split (`str`, optional): one of {", ".join(split_names())}; default: the configuration name.
    prompts (`list[str]`, optional): the questions; required for ECG-QA (its options), used for multiple choice.
    reference_compat (`bool`, optional): score as PULSE's reference scorer. Default False.
Returns:
    dict with `auc`, `f1`, `hamming_loss` (multi-label) or `accuracy`, plus `n`, `unparsed`,
    `excluded_classes` and `per_class`.
Examples:
    >>> metric = evaluate.load(ECGBENCH_METRIC_PATH, "mmmu-ecg")
    >>> metric.compute(predictions=["A", "The answer is C"], references=["A", "B"])["accuracy"]
    50.0
"""

_CITATION = """\
@article{liu2024teach,
  title={Teach Multimodal LLMs to Comprehend Electrocardiographic Images},
  author={Liu, Ruoqi and Bai, Yuelin and Yue, Xiang and Zhang, Ping},
  journal={arXiv preprint arXiv:2410.19008},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EcgbenchMetric(evaluate.Metric):
    """ECG-Bench metrics (see :func:`evl_kd_trainer.eval.score_ecgbench`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
            ],
            reference_urls=["https://github.com/AIMedLab/PULSE"],
        )

    def _compute(self, predictions, references, split=None, prompts=None, reference_compat=False):
        split = split or (self.config_name if self.config_name != "default" else None)
        if split is None:
            raise ValueError(
                f"Name the ECG-Bench split: evaluate.load(path, '<split>') or compute(..., split=...); "
                f"one of {', '.join(split_names())}."
            )
        return score_ecgbench(split, predictions, references, prompts, reference_compat=reference_compat)
