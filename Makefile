# The two commands of the README: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch for machines without CUDA: the CPU build (this file lies on the development machines' disk).
CPU_TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean

setup: $(STAMP)

# Create the venv (reusing a torch the base interpreter already has, e.g. a CUDA build),
# install torch only if none is importable, then the project in editable mode with torch
# pinned to the version present (so no dependency can replace it).
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
	    echo "setup: reusing the torch of $(PYTHON)"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; \
	fi
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "setup: keeping torch $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PY) -m pip install -q torch; \
	else \
	  $(PY) -m pip install -q "$(CPU_TORCH)"; \
	fi
	@$(PY) -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install -q -e '.[dev]' -c $(VENV)/torch-constraint.txt
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check --select F,E9 --output-format concise model data launcher interpret bench tests
	$(PY) -m pytest $(PYTEST_ARGS)

# The synthetic world, its feature store and tokenised corpora, 2-rank pre-training through the deepspeed launcher,
# consolidation into one model, then VQA and NLVR2 fine-tuning (2 ranks each) from the
# pre-trained model and from scratch with the same budget, the small preset pre-trained on the captions
# alone (held-out matching: issue 12's first target), the table of their results, the pre-trained
# model's attention figures and page for a held-out image and one of its captions, and the captions
# model's matching of two held-out images with a caption of each.
comma := ,
DEMO_IMAGE ?= synth000000
DEMO_OTHER ?= synth000001
# $(call held_out_caption,IMAGE,EXPR): prints the Python EXPR over IMAGE's held-out captions (the list `caps`)
held_out_caption = $$($(PY) -c 'import json; from data.synth import caption_kind; \
  caps = next(r["sentf"]["mscoco"] for r in json.load(open("demo/world/lxmert/minival.json")) if r["img_id"] == "$(1)"); \
  print($(2))')
demo_caption = $(call held_out_caption,$(1),next(c for c in caps if caption_kind(c) == "colour and class"))
DEMO_SENTENCE = $(call held_out_caption,$(DEMO_IMAGE),min([c for c in caps if " of " in c] or caps$(comma) key=len))
DEMO_QUESTION = $$($(PY) -c 'import json; print(next(q["sent"] for q in json.load(open("demo/world/vqa/minival.json")) if q["img_id"] == "$(DEMO_IMAGE)"))')
DS := PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/deepspeed --num_gpus 2
DEMO_FT ?=
demo: $(STAMP)
	rm -rf demo
	$(VENV)/bin/lxmert synth --out demo/world --images 600 --feat-dim 2048
	$(VENV)/bin/lxmert features build --tsv demo/world/features/train.tsv --tsv demo/world/features/val.tsv --out demo/world/store \
	  --objects-vocab demo/world/features/objects_vocab.txt --attributes-vocab demo/world/features/attributes_vocab.txt
	for split in train minival; do $(VENV)/bin/lxmert corpus build --json demo/world/lxmert/$$split.json \
	  --answers demo/world/lxmert/all_ans.json --tokenizer demo/world/vocab.txt --out demo/world/corpus/$$split || exit 1; done
	$(DS) launcher/pretrain.py --config launcher/configs/synth_tiny.yaml
	$(VENV)/bin/lxmert consolidate demo/pretrain/checkpoints demo/model
	$(DS) launcher/finetune.py --config launcher/configs/synth_vqa.yaml run_dir=demo/finetune/vqa_pretrained $(DEMO_FT)
	$(DS) launcher/finetune.py --config launcher/configs/synth_vqa.yaml run_dir=demo/finetune/vqa_scratch model.init_from=none $(DEMO_FT)
	$(DS) launcher/finetune.py --config launcher/configs/synth_nlvr2.yaml run_dir=demo/finetune/nlvr2_pretrained $(DEMO_FT)
	$(DS) launcher/finetune.py --config launcher/configs/synth_nlvr2.yaml run_dir=demo/finetune/nlvr2_scratch model.init_from=none $(DEMO_FT)
	$(DS) launcher/pretrain.py --config launcher/configs/synth_captions.yaml
	$(VENV)/bin/lxmert consolidate demo/captions/checkpoints demo/captions_model
	@echo
	$(VENV)/bin/lxmert results --by-type demo/pretrain demo/finetune/vqa_pretrained demo/finetune/vqa_scratch demo/finetune/nlvr2_pretrained \
	  demo/finetune/nlvr2_scratch demo/captions
	@echo
	@sentence="$(DEMO_SENTENCE)"; \
	  echo "$(VENV)/bin/lxmert attention demo/model --store demo/world/store --image $(DEMO_IMAGE) --sentence '$$sentence' --out demo/attention"; \
	  $(VENV)/bin/lxmert attention demo/model --store demo/world/store --image $(DEMO_IMAGE) --sentence "$$sentence" --out demo/attention
	@question="$(DEMO_QUESTION)"; \
	  echo "$(VENV)/bin/lxmert ask demo/model --store demo/world/store --image $(DEMO_IMAGE) --question '$$question' --topk 3"; \
	  $(VENV)/bin/lxmert ask demo/model --store demo/world/store --image $(DEMO_IMAGE) --question "$$question" --topk 3
	@a="$(call demo_caption,$(DEMO_IMAGE))"; b="$(call demo_caption,$(DEMO_OTHER))"; \
	  echo "$(VENV)/bin/lxmert match demo/captions_model --store demo/world/store --image $(DEMO_IMAGE) --image $(DEMO_OTHER) --sentence '$$a' --sentence '$$b'"; \
	  $(VENV)/bin/lxmert match demo/captions_model --store demo/world/store --image $(DEMO_IMAGE) --image $(DEMO_OTHER) --sentence "$$a" --sentence "$$b"
	@echo "demo: pre-trained models in demo/model and demo/captions_model; TensorBoard logs: tensorboard --logdir demo (pre-training and each fine-tuning run)"

bench: $(STAMP)
	$(PY) bench/model_speed.py
	$(PY) bench/feature_store.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
