# Set-up and test entry points (README.md). Everything goes into .venv; torch is installed
# first, pinned, so that pip never resolves a bare `torch` (which pulls GBs of CUDA packages
# on machines where the CPU wheel is not the default).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# pure-Python mmengine/mmdet3d for the registry tests (test/test_mmdet3d_integration.py):
# --no-deps keeps mmengine's opencv-python (numpy 2) and mmdet3d's heavy runtime deps out
MMDET3D_SPEC ?= mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmdet3d==1.4.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-model test test-core test-ros2 venv venv-test clean

# the package and what it needs to run (the demo)
venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e .
	touch $@

# + what the tests need: pytest, the onnx extra, the mmdet3d registry packages
venv-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[test,onnx]"
	$(BIN)/pip install -q --no-deps $(MMDET3D_SPEC)
	$(BIN)/pip install -q addict yapf termcolor rich
	touch $@

demo: venv
	$(BIN)/sparsebev demo

# retrain the bundled demo model (docs/demo_model.md: about 40 + 40 + 80 + 105 min on 2 CPU
# cores): stage 1 from scratch on world 0, stage 2 fine-tunes it on worlds 0, 1 and 2, stages 3
# and 4 train eleven and fifteen more epochs of those
demo-model: venv
	$(BIN)/python -m sparsebev_cli.demo.train_model --data data/synthetic_train \
	    --work-dir work_dirs/demo_model --epochs 20 --threads 2 \
	    --export work_dirs/demo_model/stage1.pth
	$(BIN)/python -m sparsebev_cli.demo.train_model --data data/synthetic_train \
	    --extra-data data/synthetic_train_s1 data/synthetic_train_s2 \
	    --init-from work_dirs/demo_model/stage1.pth --work-dir work_dirs/demo_model_stage2 \
	    --epochs 2 --lr-by-iteration --stop-prev-grad 1 --checkpoint-interval 100 \
	    --export work_dirs/demo_model_stage2/stage2.pth
	$(BIN)/python -m sparsebev_cli.demo.train_model --data data/synthetic_train \
	    --extra-data data/synthetic_train_s1 data/synthetic_train_s2 \
	    --init-from work_dirs/demo_model_stage2/stage2.pth --work-dir work_dirs/demo_model_stage3 \
	    --epochs 11 --lr-by-iteration --stop-prev-grad 1 --checkpoint-interval 200 --threads 2 \
	    --export work_dirs/demo_model_stage3/stage3.pth
	$(BIN)/python -m sparsebev_cli.demo.train_model --data data/synthetic_train \
	    --extra-data data/synthetic_train_s1 data/synthetic_train_s2 \
	    --init-from work_dirs/demo_model_stage3/stage3.pth --work-dir work_dirs/demo_model_stage4 \
	    --epochs 15 --lr-by-iteration --stop-prev-grad 1 --checkpoint-interval 200 --threads 2 \
	    --export sparsebev_core/weights/tiny_synthetic.pth

test: test-core test-ros2

test-core: venv-test
	$(BIN)/python -m pytest -q --durations=25 test

test-ros2: venv-test
	bash scripts/ros2_tier2.sh

clean:
	rm -rf $(VENV) .venv-ros .ros2_build build *.egg-info demo_output
