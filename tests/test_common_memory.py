"""The short memory three services keep (intake's volunteer names, the ledger's accounts, the notifier's
contacts), without I/O."""

import pytest

from services.common.memory import Recent

pytestmark = pytest.mark.domain


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_fresh_for_its_ttl_and_then_only_the_last_known() -> None:
    clock = Clock()
    names: Recent[str, str] = Recent(60.0, clock=clock)
    names.put("v-1", "王阿姨")

    clock.now += 59.9
    fresh_before, last_before = names.fresh("v-1"), names.last("v-1")
    clock.now += 0.1

    assert (fresh_before, last_before) == ("王阿姨", "王阿姨")
    assert (names.fresh("v-1"), names.last("v-1")) == (None, "王阿姨")
    assert (names.fresh("v-2"), names.last("v-2")) == (None, None)


def test_putting_again_starts_the_ttl_again_and_keeps_the_new_value() -> None:
    clock = Clock()
    names: Recent[str, str] = Recent(60.0, clock=clock)
    names.put("v-1", "王阿姨")
    clock.now += 50
    names.put("v-1", "王秀英")
    clock.now += 50

    assert names.fresh("v-1") == "王秀英"


def test_when_full_a_new_key_drops_the_expired_first_and_everything_only_if_none_had_expired() -> None:
    clock = Clock()
    kept: Recent[int, int] = Recent(10.0, limit=4, clock=clock)
    kept.put(1, 1)
    kept.put(2, 2)
    clock.now += 11
    kept.put(3, 3)
    kept.put(4, 4)

    kept.put(3, 30)  # a key already kept replaces its value without dropping anything
    full = len(kept)
    kept.put(5, 5)  # 1 and 2 had expired
    after_expired = sorted(k for k in range(1, 7) if kept.last(k) is not None)
    kept.put(6, 6)
    kept.put(7, 7)  # full again with nothing expired: all dropped, then 7 kept

    assert full == 4 and after_expired == [3, 4, 5]
    assert len(kept) == 1 and kept.fresh(7) == 7 and kept.last(3) is None
