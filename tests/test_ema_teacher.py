"""The EMA teacher's update rule on fixed numbers (nnunet_pick.training.ema_teacher)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnunet_pick.training.ema_teacher import EMATeacher


class TinyDecoder(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class TinyUNet(nn.Module):
    """encoder / decoder like dynamic-network-architectures' U-Nets: the decoder registers its encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2, bias=False)
        self.decoder = TinyDecoder(self.encoder)


def set_weights(net: TinyUNet, value: float) -> None:
    with torch.no_grad():
        net.encoder.weight.fill_(value)
        net.decoder.head.weight.fill_(2 * value)


def test_mean_teacher_ramp_then_exponential_average():
    student = TinyUNet()
    set_weights(student, 1.0)
    teacher = EMATeacher(student, decay=0.6)
    assert teacher.decoder.encoder is teacher.encoder  # the copy keeps the decoder's reference to its own encoder
    expected = 1.0
    for n, value in enumerate([3.0, 5.0, 11.0, 7.0]):
        set_weights(student, value)
        d = min(0.6, 1 - 1 / (n + 1))  # 0, 0.5, 0.6, 0.6
        assert teacher.current_decay() == pytest.approx(d)
        teacher.update(student)
        expected = d * expected + (1 - d) * value
        assert float(teacher.encoder.weight[0, 0]) == pytest.approx(expected)
        assert float(teacher.decoder.head.weight[0, 0]) == pytest.approx(2 * expected)
    assert expected == pytest.approx(0.6 * (0.6 * 4 + 0.4 * 11) + 0.4 * 7)
    assert int(teacher.num_updates) == 4
    assert float(student.encoder.weight.detach()[0, 0]) == 7.0  # the student is not changed
    assert float(teacher(torch.ones(1, 2))) == pytest.approx(2 * (2 * expected) * (2 * expected))  # head . encoder . 1


def test_bad_decay_and_a_mismatched_student_are_refused():
    with pytest.raises(ValueError, match="decay must be in"):
        EMATeacher(TinyUNet(), decay=1.0)
    teacher = EMATeacher(TinyUNet(), decay=0.9)
    other = TinyUNet()
    other.decoder.head = nn.Linear(2, 3, bias=False)
    with pytest.raises(ValueError, match="do not match"):
        teacher.update(other)
