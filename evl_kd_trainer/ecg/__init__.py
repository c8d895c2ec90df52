"""ECG data tooling: render signals as ECGInstruct-style pictures, synthesise a dataset, convert PTB-XL / CODE-15%.

Names are imported lazily, so ``evl-kd make-synthetic --help`` does not pay for pandas, wfdb or h5py.
"""

from __future__ import annotations

from evl_kd_trainer.lazy import lazy_getattr

_LAZY_EXPORTS: dict[str, str] = {
    "render_ecg": "evl_kd_trainer.ecg.render",
    "PageGeometry": "evl_kd_trainer.ecg.render",
    "PaperStyle": "evl_kd_trainer.ecg.render",
    "Layout": "evl_kd_trainer.ecg.layouts",
    "LAYOUTS": "evl_kd_trainer.ecg.layouts",
    "STANDARD_LEADS": "evl_kd_trainer.ecg.leads",
    "AugmentConfig": "evl_kd_trainer.ecg.augment",
    "Augmentation": "evl_kd_trainer.ecg.augment",
    "simulate_ecg": "evl_kd_trainer.ecg.simulate",
    "RHYTHM_CLASSES": "evl_kd_trainer.ecg.simulate",
    "make_synthetic_dataset": "evl_kd_trainer.ecg.synthetic",
    "write_train_subset": "evl_kd_trainer.ecg.synthetic",
    "convert_ptbxl": "evl_kd_trainer.ecg.ptbxl",
    "convert_code15": "evl_kd_trainer.ecg.code15",
    "ConversionError": "evl_kd_trainer.ecg.conversion",
    "ConversionReport": "evl_kd_trainer.ecg.conversion",
}

__all__ = list(_LAZY_EXPORTS)


__getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
