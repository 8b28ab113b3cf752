"""Knowledge distillation on the same trainer (paper Feature 4: does a larger teacher make a
small student condense less? measure it before and after).

    lmdisp distill --model Qwen/Qwen2.5-0.5B --teacher Qwen/Qwen2.5-7B --loss dispersion

Loss = (1 - alpha) * CE + alpha * KD + lambda * regulariser, with
    KD = T^2 * mean over real tokens of KL( softmax(teacher / T) || softmax(student / T) )
(Hinton et al. 2015; T^2 keeps the gradient scale independent of T). Teacher and student
must share the tokenizer's vocabulary (`check_teacher` refuses, before any weights load, a
teacher whose tokenizer gives any of the student's tokens another id: the KL compares the two
distributions id by id); the teacher runs in eval mode without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmdisp.errors import ConfigError
from lmdisp.train.trainer import DispersionTrainer


def check_teacher(cfg, student: str, tokenizer) -> None:
    """Refuse a teacher whose own tokenizer does not give every token of the run's tokenizer
    (`tokenizer`, the student's) the same id: its logits would then score other tokens."""
    from lmdisp.models import default_tokenizer, load_tokenizer

    teacher_tok = load_tokenizer(default_tokenizer(cfg.teacher), trust_remote_code=cfg.trust_remote_code)
    theirs, ours = teacher_tok.get_vocab(), tokenizer.get_vocab()
    if any(theirs.get(token) != i for token, i in ours.items()):
        raise ConfigError(f"--teacher {cfg.teacher}: its tokenizer ({len(theirs)} tokens) is not the student's "
                          f"(`{student}`: {len(ours)} tokens) and distillation compares their next-token "
                          "probabilities id by id; choose a teacher of the student's family, or a student with the "
                          "teacher's tokenizer (--tokenizer, or a random: config whose `tokenizer` is the teacher's)")


class DistillTrainer(DispersionTrainer):
    """`DispersionTrainer` plus a distillation term from a frozen teacher."""

    def __init__(self, *args, teacher, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        student_vocab = self.model.get_output_embeddings().weight.shape[0]
        teacher_vocab = teacher.get_output_embeddings().weight.shape[0]
        if min(student_vocab, teacher_vocab) < len(self.processing_class or []):
            raise ConfigError(f"teacher ({teacher_vocab}) or student ({student_vocab}) vocabulary is smaller than "
                              "the tokenizer's: they must share one tokenizer")

    @property
    def ce_weight(self) -> float:
        return 1.0 - self.run_config.distill_alpha

    def has_auxiliary(self) -> bool:
        return True

    def auxiliary_terms(self, model, inputs, outputs):
        terms = super().auxiliary_terms(model, inputs, outputs)
        device = outputs.logits.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            teacher_logits = self.teacher(input_ids=inputs["input_ids"],
                                          attention_mask=inputs.get("attention_mask")).logits
        kd = self.distillation_loss(outputs.logits, teacher_logits, inputs.get("attention_mask"),
                                    self.run_config.distill_temperature)
        terms["kd"] = (self.run_config.distill_alpha, kd)
        return terms

    @staticmethod
    def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                          mask: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """T^2 * mean over real tokens of KL(teacher_T || student_T), in (at least) float32.

        Logits are [B, S, V]; vocabularies of different sizes (padded embedding matrices)
        are compared on the shared first V entries."""
        vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
        dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float64 stays (gradcheck)
        s = F.log_softmax(student_logits[..., :vocab].to(dtype) / temperature, dim=-1)
        t = F.log_softmax(teacher_logits[..., :vocab].to(dtype) / temperature, dim=-1)
        per_token = (t.exp() * (t - s)).sum(-1)
        if mask is None:
            return per_token.mean() * temperature**2
        mask = mask.to(per_token.dtype)
        return (per_token * mask).sum() / mask.sum().clamp_min(1) * temperature**2
