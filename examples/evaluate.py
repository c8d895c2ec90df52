r"""Score models on ECG-Bench splits and write the paper's Table 1 (results.md), results.json, a per-class chart:

    python examples/evaluate.py --model_name_or_path checkpoints/evl-ecg-2b checkpoints/pulse-7b-hf \
        --model_names EVL-ECG PULSE-7B --splits ptb-xl-super code15 ecgqa cpsc2018 csn g12ec mmmu-ecg \
        --data_files data/ECGBench/ptb-test.json data/ECGBench/code15-test.json data/ECGBench/ecgqa-test.json \
        data/ECGBench/cpsc-test.json data/ECGBench/csn-test-no-cot.json data/ECGBench/g12-test-no-cot.json \
        data/ECGBench/mmmu-ecg.json --image_root data/ECGBench/images --output_dir eval_results

The same fields can live in a YAML recipe (`--recipe PATH`, command-line values win). Add
`--reference_compat` to score as PULSE's reference scorer does, for comparison with published numbers.
"""

import sys

from evl_kd_trainer.scripts.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
