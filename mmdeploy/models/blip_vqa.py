"""BLIP visual question answering (``BlipForQuestionAnswering``): four graphs.

Components:

* ``vision``: ``pixel_values`` → ``image_embeds`` [batch, image_tokens, hidden];
* ``question_encoder``: ``input_ids`` / ``attention_mask`` int64 [batch, question], ``image_embeds``
  → ``question_embeds`` [batch, question, hidden] (the question, cross-attending to the image);
* ``text_decoder`` / ``text_decoder_with_past``: the answer decoder, as for captioning
  (:mod:`mmdeploy.models.blip`), cross-attending to ``question_embeds`` instead of the image; its
  cross keys / values have a dynamic ``question`` axis.

``answer(runners, image, question)`` reproduces ``BlipForQuestionAnswering.generate()`` (greedy)
over any Runners: the decoder starts from ``bos``, attends to every question position (as
``generate`` does) and stops on ``sep`` or ``max_length``.  The task metric is token-level
agreement of the answers with PyTorch ``generate()`` on the demo's shape images and a few
questions; the reference answers and the question token ids are kept in the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.torch import TorchRunner
from mmdeploy.data.media import decode_image
from mmdeploy.errors import CalibrationError, InputError
from mmdeploy.models.base import Component, TaskResult
from mmdeploy.models.blip import BlipAdapter, _modules, trim
from mmdeploy.runtime.generate import answer_tokens, greedy_generate, past_names, token_agreement

QUESTIONS = ["what shape is in the picture?", "what color is the shape?", "is the shape large or small?",
             "how many shapes are there?"]
COMPONENTS = ("vision", "question_encoder", "text_decoder", "text_decoder_with_past")


class BlipVqaAdapter(BlipAdapter):
    family = "blip-vqa"
    description = "BLIP question answering (BlipForQuestionAnswering): vision, question encoder, answer decoder"
    model_class = "BlipForQuestionAnswering"

    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        return "BlipForQuestionAnswering" in ((config or {}).get("architectures") or [])

    def torch_model(self):
        if self._model is None:
            from transformers import BlipForQuestionAnswering

            from mmdeploy.models.clap import from_pretrained

            self._model = from_pretrained(BlipForQuestionAnswering, self.source, self.allow_pickle)
        return self._model

    def _generation_metadata(self) -> dict:
        meta = super()._generation_metadata()
        meta["generation"]["bos_token_id"] = int(self.torch_model().decoder_start_token_id)
        return meta

    # ---- questions ----------------------------------------------------------------------
    def question_ids(self, question: str) -> dict[str, np.ndarray]:
        """A question as encoder feeds (the tokenizer's ids, as the processor gives them)."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty", 'pass a question, e.g. "what color is the shape?"')
        ids = np.asarray([self.require_tokenizer()(question.strip())["input_ids"]], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def eval_questions(self) -> list[dict[str, np.ndarray]]:
        """The task's questions as feeds: stored in the bundle, else tokenized, else (no tokenizer)
        token ids drawn from the vocabulary."""
        stored = self.bundle_metadata.get("questions")
        if stored:
            return [{"input_ids": np.asarray([q], np.int64), "attention_mask": np.ones((1, len(q)), np.int64)}
                    for q in stored]
        if self.tokenizer is not None:
            return [self.question_ids(q) for q in QUESTIONS]
        vocab = int((self._config().get("text_config") or {}).get("vocab_size", 1000))
        rng = np.random.default_rng(7)
        out = []
        for q in QUESTIONS:
            ids = rng.integers(5, max(vocab, 6), (1, 2 + len(q.split()))).astype(np.int64)
            out.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        return out

    def eval_pairs(self, limit: int | None = None) -> list[tuple[Any, dict[str, np.ndarray]]]:
        """(image, question feeds) pairs: each eval image with one of the questions in turn."""
        questions = self.eval_questions()
        images = self.eval_images(limit)
        return [(img, questions[i % len(questions)]) for i, img in enumerate(images)]

    # ---- components ---------------------------------------------------------------------
    def components(self) -> dict[str, Component]:
        if self._components is None:
            import torch

            self._check_token_ids()
            model = self.torch_model()
            vision, decoder, decoder_with_past = _modules(model)
            settings = self.settings()
            present = past_names(settings.num_layers, "present")
            past = past_names(settings.num_layers, "past")
            cross = past_names(settings.num_layers, "cross")
            vocab = model.config.text_config.vocab_size

            class QuestionEncoder(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.text_encoder = model.text_encoder

                def forward(self, input_ids, attention_mask, image_embeds):
                    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
                    return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask,
                                             encoder_hidden_states=image_embeds,
                                             encoder_attention_mask=image_mask, return_dict=False)[0]

            def vision_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                images = self.eval_images(batch + seed % 5)[seed % 5:]
                return self.pixel_values(images)

            def image_embeds(batch: int, seed: int) -> np.ndarray:
                return TorchRunner(self._components["vision"]).run(vision_inputs(batch, seed))["image_embeds"]

            def ids(batch: int, seed: int, length: int) -> np.ndarray:
                rng = np.random.default_rng(seed)
                return rng.integers(5, vocab, (batch, length)).astype(np.int64)

            def question_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                q = ids(batch, seed, 3 + seed % 4)
                mask = np.ones_like(q)
                if batch > 1:
                    mask[1:, -1] = 0  # a padded question in the batch
                return {"input_ids": q, "attention_mask": mask, "image_embeds": image_embeds(batch, seed)}

            def question_embeds(batch: int, seed: int) -> np.ndarray:
                return TorchRunner(self._components["question_encoder"]).run(question_inputs(batch, seed))[
                    "question_embeds"]

            def decoder_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                prefix = ids(batch, seed + 1, 2 + seed % 3)
                prefix[:, 0] = settings.bos_token_id
                return {"input_ids": prefix, "encoder_hidden_states": question_embeds(batch, seed)}

            def with_past_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                feeds = decoder_inputs(batch, seed + 1)
                prefix = np.concatenate([feeds["input_ids"], ids(batch, seed, 1)], axis=1)
                first = TorchRunner(self._components["text_decoder"]).run(
                    {"input_ids": prefix[:, :-1], "encoder_hidden_states": feeds["encoder_hidden_states"]})
                return {"input_ids": prefix[:, -1:], **{p: first[n] for p, n in zip(past, present)},
                        **{n: first[n] for n in cross}}

            question_axes = {n: {0: "batch", 2: "question"} for n in cross}
            self._components = {
                "vision": Component("vision", vision, ["pixel_values"], ["image_embeds"],
                                    {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                                    vision_inputs, modality="image"),
                "question_encoder": Component(
                    "question_encoder", QuestionEncoder().eval(), ["input_ids", "attention_mask", "image_embeds"],
                    ["question_embeds"],
                    {"input_ids": {0: "batch", 1: "question"}, "attention_mask": {0: "batch", 1: "question"},
                     "image_embeds": {0: "batch"}, "question_embeds": {0: "batch", 1: "question"}},
                    question_inputs, modality="text"),
                "text_decoder": Component(
                    "text_decoder", decoder, ["input_ids", "encoder_hidden_states"], ["logits", *present, *cross],
                    {"input_ids": {0: "batch", 1: "sequence"}, "encoder_hidden_states": {0: "batch", 1: "question"},
                     "logits": {0: "batch", 1: "sequence"},
                     **{n: {0: "batch", 2: "sequence"} for n in present}, **question_axes},
                    decoder_inputs, modality="text"),
                "text_decoder_with_past": Component(
                    "text_decoder_with_past", decoder_with_past, ["input_ids", *past, *cross], ["logits", *present],
                    {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"},
                     **question_axes, **{n: {0: "batch", 2: "past_sequence"} for n in past},
                     **{n: {0: "batch", 2: "total_sequence"} for n in present}},
                    with_past_inputs, modality="text"),
            }
        return self._components

    # ---- answering ----------------------------------------------------------------------
    def answer_tokens(self, runners: dict, pixel_values: np.ndarray, question: dict[str, np.ndarray],
                      max_length: int | None = None, return_logits: bool = False):
        """Greedy answer token ids (trimmed at sep) for one image and one question's feeds."""
        missing = [c for c in ("vision", "question_encoder", "text_decoder") if c not in runners]
        if missing:
            raise InputError(f"blip-vqa needs runners for {', '.join(missing)}",
                             "convert the checkpoint with all its components")
        settings = self.settings()
        tokens, logits = answer_tokens(runners, pixel_values, question, settings, max_length, return_logits=True)
        rows = [trim(row, settings) for row in tokens.tolist()]
        return (rows[0], logits) if return_logits else rows[0]

    def answer(self, runners: dict, image, question: str, max_length: int | None = None) -> str:
        """The greedy answer to ``question`` about ``image`` (a PIL image or an image file), as
        ``BlipForQuestionAnswering.generate()`` + ``decode(skip_special_tokens=True)`` gives it."""
        if isinstance(image, (str, Path)):
            image = decode_image(image)
        tokens = self.answer_tokens(runners, self.pixel_values([image])["pixel_values"],
                                    self.question_ids(question), max_length)
        return self.decode(tokens)

    def reference_tokens(self, n: int | None = None) -> list[list[int]]:
        """PyTorch ``generate()`` (greedy) answers on the eval (image, question) pairs."""
        import torch

        settings = self.settings()
        out = []
        for image, question in self.eval_pairs(n):
            pixels = torch.from_numpy(self.pixel_values([image])["pixel_values"])
            with torch.no_grad():
                tokens = self.torch_model().generate(
                    input_ids=torch.from_numpy(question["input_ids"]), pixel_values=pixels,
                    attention_mask=torch.from_numpy(question["attention_mask"]), max_length=settings.max_length,
                    do_sample=False, num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0)
            out.append(trim(tokens[0].tolist(), settings))
        return out

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(task="vqa", questions=[q["input_ids"][0].tolist() for q in self.eval_questions()])
        return meta

    # ---- data ---------------------------------------------------------------------------
    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """vision: images; question_encoder and decoders: the task's questions (or, with ``path``,
        a .txt file of questions) over the calibration images."""
        if component == "vision":
            return [self.pixel_values([img]) for img in self._images_from(path, limit)]
        if component not in COMPONENTS:
            raise CalibrationError(f"blip-vqa has no component {component!r}", "components: " + ", ".join(COMPONENTS))
        from mmdeploy.models.preprocess import read_captions

        questions = [self.question_ids(q) for q in read_captions(Path(path))] if path is not None \
            else self.eval_questions()
        count = limit or 16
        images = self.eval_images(count, split="calib")
        vision, encoder = self._runner("vision"), self._runner("question_encoder")
        decoder = self._runner("text_decoder")
        settings = self.settings()
        feeds = []
        for i, image in enumerate(images[:count]):
            q = questions[i % len(questions)]
            image_embeds = vision.run(self.pixel_values([image]))["image_embeds"]
            if component == "question_encoder":
                feeds.append({**q, "image_embeds": image_embeds})
                continue
            encoded = encoder.run({**q, "image_embeds": image_embeds})["question_embeds"]
            tokens = greedy_generate(encoded, decoder, settings, max_length=settings.max_length)
            if component == "text_decoder":
                feeds.append({"input_ids": tokens[:, :max(1, tokens.shape[1] - 1)], "encoder_hidden_states": encoded})
                continue
            if tokens.shape[1] < 2:
                continue
            first = decoder.run({"input_ids": tokens[:, :-1], "encoder_hidden_states": encoded})
            feeds.append({"input_ids": tokens[:, -1:],
                          **{p: first[n] for p, n in zip(past_names(settings.num_layers, "past"),
                                                         past_names(settings.num_layers, "present"))},
                          **{n: first[n] for n in past_names(settings.num_layers, "cross")}})
        return feeds

    # ---- task ---------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        return COMPONENTS

    def evaluate(self, runners: dict, limit: int | None = None) -> TaskResult:
        """Token-level agreement of greedy answers from ``runners`` with PyTorch generate()."""
        reference = self.bundle_metadata.get("reference_tokens") or self.reference_tokens()
        reference = reference[:limit] if limit else reference
        got, logits = [], []
        for image, question in self.eval_pairs(len(reference)):
            tokens, first = self.answer_tokens(runners, self.pixel_values([image])["pixel_values"], question,
                                               return_logits=True)
            got.append(tokens)
            logits.append(first)
        settings = self.settings()
        flat = [t for row in got for t in row + [settings.pad_token_id] * (settings.max_length - len(row))]
        exact = sum(a == b for a, b in zip(reference, got)) / len(reference)
        return TaskResult("answer-token-agreement", token_agreement(reference, got), len(reference), flat,
                          {"exact_match": exact,
                           "answers": [self.decode(t) for t in got] if self.tokenizer is not None else [],
                           "dataset": "demo-shapes/eval", "logits": np.concatenate(logits)})
