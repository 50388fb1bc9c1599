"""The device flag: every bad value is one line naming the device asked for and what to use instead."""

import pytest
import torch

from grouprobust.errors import GroupRobustError
from grouprobust.models import pick_device


def test_an_unknown_device_name_is_refused():
    with pytest.raises(GroupRobustError, match=r"unknown device 'gpu0'; use cpu, cuda or cuda:N"):
        pick_device("gpu0")


def test_a_cuda_device_without_a_gpu_names_the_device_asked_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GroupRobustError, match=r"device 'cuda:7' requested but no CUDA GPU is available"):
        pick_device("cuda:7")


def test_a_gpu_index_past_the_last_gpu_says_how_many_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(GroupRobustError, match=r"'cuda:7' requested but this machine has 2 CUDA GPU\(s\); use cuda:0 to cuda:1"):
        pick_device("cuda:7")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")
