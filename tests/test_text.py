"""The one plural rule of what the package prints (resnet_lab._text): the reference is English as
written by hand, "1 epoch" and "0 epochs" alike."""

import pytest

from resnet_lab._text import count, every_steps, interrupted_words, seeds_text


@pytest.mark.parametrize("n, noun, want", [(0, "epoch", "0 epochs"), (1, "epoch", "1 epoch"), (2, "step", "2 steps"),
                                           (10, "image", "10 images")])
def test_count_is_singular_for_one_alone(n, noun, want):
    assert count(n, noun) == want


@pytest.mark.parametrize("seeds, want", [([7], "seed 7"), ([0, 1, 2], "seeds 0, 1, 2"), (range(2), "seeds 0, 1")])
def test_seeds_text_is_singular_for_one_seed(seeds, want):
    assert seeds_text(seeds) == want


def test_every_steps_names_one_step_without_a_number():
    assert (every_steps(1), every_steps(5)) == ("every training step", "every 5 training steps")


@pytest.mark.parametrize("message, world, want", [
    ("signal 15", "2", "rank 1: stopped by torchrun (SIGTERM): another process failed (its error says why) or the "
                       "job was interrupted"),
    ("signal 15", "1", "interrupted"),  # one process: a SIGTERM is the user's (or the system's) stop
    ("", "2", "interrupted"),  # a Ctrl-C under torchrun
])
def test_interrupted_words_blame_torchrun_only_for_a_sigterm_among_several_ranks(message, world, want, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", "1")
    assert interrupted_words(KeyboardInterrupt(message)) == want
