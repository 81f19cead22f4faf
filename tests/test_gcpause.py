"""service/gcpause.py: the collector waits while any call builds a chart, and runs again after the last."""
import gc
import threading

from service.gcpause import collector_paused


def test_paused_inside_and_restored_after_the_last_holder():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()          # the outer holder is still building
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_threads_overlapping():
    inside, release = threading.Event(), threading.Event()

    def hold():
        with collector_paused():
            inside.set()
            release.wait(5)
    worker = threading.Thread(target=hold)
    worker.start()
    inside.wait(5)
    with collector_paused():
        pass
    assert not gc.isenabled()              # the other thread still holds it
    release.set()
    worker.join(5)
    assert gc.isenabled()


def test_an_error_inside_still_restores_the_collector():
    try:
        with collector_paused():
            raise ValueError("x")
    except ValueError:
        pass
    assert gc.isenabled()
