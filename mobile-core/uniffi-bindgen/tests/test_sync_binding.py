"""A phone app's screens while a sync crawls over a weak signal, through the generated Python
binding: lists answer at once, the progress callback may read the store, listeners hear of what
the sync brings, and a cancelled sync leaves the store to go on from where it stopped.

Arguments: the binding's directory, the server's address (a slow link in front of it), an
officer's username and password, and how many persons the officer's village holds."""

import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, sys.argv[1])
import mobile_core as mc  # noqa: E402

SERVER, USERNAME, PASSWORD, HELD = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
VILLAGE = "441303006001"
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


class Heard(mc.ChangeListener):
    def __init__(self):
        self.changes = []
        self.lock = threading.Lock()

    def changed(self, change):
        with self.lock:
            self.changes.append(change)

    def of(self, source):
        with self.lock:
            return [c for c in self.changes if c.source == source]


class Reentrant(mc.ChangeListener):
    """Asks for a sync from inside one: refused at once, not left waiting for itself."""

    def __init__(self, store):
        self.store = store
        self.refused = []

    def changed(self, change):
        if change.source == "sync" and not self.refused:
            try:
                self.store.sync(None)
                self.refused.append("ran")
            except mc.MobileError.Other as e:
                self.refused.append(str(e))


class Progress(mc.SyncProgress):
    """Reads the store from the callback, as an app showing a count would."""

    def __init__(self, store, cancel_at_pull=False):
        self.store = store
        self.cancel_at_pull = cancel_at_pull
        self.phases = []
        self.read_in_callback = 0

    def progress(self, phase, done, total):
        self.phases.append(phase)
        self.store.list("person", None, 5, 0)
        self.read_in_callback += 1
        if self.cancel_at_pull and phase == "pull":
            self.store.cancel_sync()


def in_background(store, progress):
    outcome = {}

    def run():
        try:
            outcome["report"] = store.sync(progress)
        except mc.MobileError as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


with tempfile.TemporaryDirectory() as data:
    store = mc.FieldStore.open(os.path.join(data, "field.db"))
    heard = Heard()
    listener = store.add_listener(heard)
    store.login(SERVER, USERNAME, PASSWORD, "python phone")
    named = [(v.code, v.name) for v in store.session().named_villages]
    check(named == [(VILLAGE, "桥西社区居民委员会")], f"the session names its villages: {named}")

    # The app's own write is heard at once, with its id.
    pid = store.capture("person", {"village": VILLAGE, "id_number": "11010519491231002x", "name": "王芳"})
    local = heard.of("local")
    check(len(local) == 1 and local[0].ids == [pid] and local[0].kinds == ["person"], "a capture is heard")

    # A sync over the slow link, while the screen lists records again and again.
    reentrant = Reentrant(store)
    reentrant_id = store.add_listener(reentrant)
    progress = Progress(store)
    thread, outcome = in_background(store, progress)
    latencies = []
    while thread.is_alive():
        started = time.monotonic()
        store.list("person", None, 20, 0)
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    thread.join()
    check("report" in outcome, f"the sync completes: {outcome.get('error')}")
    check(len(latencies) >= 20, f"the sync took a while on the slow link ({len(latencies)} lists during it)")
    median = statistics.median(latencies)
    check(median < 0.05, f"a list answers within 50 ms while the sync runs (median {median * 1000:.1f} ms)")
    check(max(latencies) < 1.0, f"no list waited for the sync (longest {max(latencies) * 1000:.0f} ms)")
    print(f"lists during the sync: {len(latencies)}, median {median * 1000:.1f} ms, "
          f"longest {max(latencies) * 1000:.1f} ms")
    check(progress.read_in_callback > 0 and "pull" in progress.phases, "the progress callback read the store")
    check(outcome["report"].pushed > 0 and outcome["report"].pulled > 0, "the capture went up, the village came down")

    check(len(reentrant.refused) == 1 and "listener" in reentrant.refused[0],
          f"a sync asked for from a listener of one is refused: {reentrant.refused}")
    store.remove_listener(reentrant_id)
    synced = heard.of("sync")
    check(synced, "the sync's pages are heard")
    named = {i for c in synced for i in c.ids}
    complete = all(c.ids_complete for c in synced)
    check(pid in named, "settling the capture is heard (it no longer waits)")
    check(not complete or len(named) >= HELD, f"every record pulled is named ({len(named)} of {HELD})")
    check(len(store.list("person", None, HELD + 10, 0)) == HELD + 1, "the village and the capture are held")

    check(store.remove_listener(listener), "a listener is removed")
    store.edit(pid, {"phone": "13800138000"})
    check(len(heard.of("local")) == 1, "a removed listener hears nothing more")

# A fresh phone's bootstrap, cancelled from its progress callback once the first page is in.
with tempfile.TemporaryDirectory() as data:
    store = mc.FieldStore.open(os.path.join(data, "field.db"))
    store.login(SERVER, USERNAME, PASSWORD, "second python phone")
    thread, outcome = in_background(store, Progress(store, cancel_at_pull=True))
    thread.join()
    check(isinstance(outcome.get("error"), mc.MobileError.Cancelled), f"the sync ends cancelled: {outcome}")
    part = len(store.list("person", None, HELD + 10, 0))
    check(part < HELD + 1, f"it stopped part way ({part} of {HELD + 1})")
    report = store.sync(None)
    check(len(store.list("person", None, HELD + 10, 0)) == HELD + 1, "the next sync brings the rest")
    check(report.pulled > 0, "and pulled what was left")

print(f"python sync binding: {checks} passed, 0 failed")
