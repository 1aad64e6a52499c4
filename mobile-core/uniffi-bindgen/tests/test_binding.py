"""mobile-core through its generated Python binding: what a phone app does through Kotlin or Swift."""

import os
import sys
import tempfile

sys.path.insert(0, sys.argv[1])
import mobile_core as mc  # noqa: E402

VILLAGE = "441303006001"
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


with tempfile.TemporaryDirectory() as data:
    path = os.path.join(data, "field.db")
    store = mc.FieldStore.open(path)
    node = store.node_id()

    pid = store.capture("person", {"village": VILLAGE, "id_number": "11010519491231002x", "name": "王芳"})
    hits = store.search("110105", 10)
    check([h.id for h in hits] == [pid], "search by ID number prefix finds the person")
    check(store.search("王", 10)[0].label.startswith("王芳"), "search by name prefix")

    record = store.get(pid)
    check(record.fields["gender"] == "female", "gender derived from the ID number")
    check(record.fields["birth_date"] == "1949-12-31", "birth date derived")
    check(record.summary.review_status == "pending", "new records await review")

    try:
        store.capture("person", {"village": VILLAGE, "id_number": "110105194912310021", "name": "李四"})
        check(False, "a wrong check character is refused")
    except mc.MobileError.Invalid as e:
        problem = e.problems[0]
        check(problem.field == "id_number" and problem.code == "checksum", "the error names the field")
        check("校验位" in problem.message_zh and "check character" in problem.message_en, "bilingual message")

    pending = store.pending_count()
    check(pending > 5, "captures wait in the outbox")
    check(store.edit(pid, {"phone": "138 0013 8000"}) == 1, "an edit changes one field")
    check(store.pending_count() == pending + 1, "and adds one change")

    try:
        store.get("not-a-uuid")
        check(False, "a malformed id is not found")
    except mc.MobileError.NotFound:
        check(True, "not found")

    check(store.session() is None, "no session before login")
    check(store.returned() == [], "nothing returned yet")
    try:
        store.sync(None)
        check(False, "sync without a session is refused")
    except mc.MobileError.Auth as e:
        check(e.code == "not_signed_in", "sync says to sign in first")

    class Progress(mc.SyncProgress):
        def progress(self, phase, done, total):
            pass

    try:
        store.sync(Progress())
    except mc.MobileError.Auth:
        check(True, "a progress callback can be passed from Python")

    specs = mc.field_specs("vehicle")
    check(any(s.name == "plate" and s.required for s in specs), "forms come from the data model")
    by_name = {s.name: s for s in specs}
    check(by_name["owner"].input == "reference" and by_name["owner"].target_kind == "person",
          "a reference names the kind to pick")
    check(by_name["plate_kind"].derived and by_name["plate_kind"].editable
          and by_name["plate_kind"].derived_from == ["plate", "vehicle_type"], "derived fields say so")
    person = {s.name: s for s in mc.field_specs("person")}
    check(person["name"].max_length == 50 and person["birth_date"].input == "date", "limits and types")
    check(person["gender"].derived and "id_number" in person["gender"].derived_from
          and person["gender"].derived_when == "id_type=resident_id", "gender is derived from a resident ID")
    check(person["origin_name"].derived and not person["origin_name"].editable, "the origin is only derived")
    check(person["phone"].hint_zh != "" and person["phone"].input == "phone", "hints")
    house = {s.name: s for s in mc.field_specs("house")}
    check((house["room_count"].min_value, house["room_count"].max_value) == (0, 10000), "ranges")

    # Live feedback while the officer types the number.
    typed = mc.decode_id_number("441303")
    check(typed.region_name == "广东省惠州市惠阳区" and typed.birth_date is None and not typed.valid,
          "the region from six digits")
    whole = mc.decode_id_number("11010519491231002x")
    check(whole.valid and whole.sex == "female" and whole.birth_date == "1949-12-31" and whole.age >= 76,
          "a whole number: birth date, age, sex")
    wrong = mc.decode_id_number("110105194912310021")
    check(not wrong.valid and wrong.problem.code == "checksum" and wrong.problem.field == "id_number",
          "a wrong check character is told, naming the field")

    # A form checked without saving: every problem, and the record a known number would update.
    waiting = store.pending_count()
    form = store.validate("person", {"village": VILLAGE, "id_number": "110105194912310021",
                                     "name": "长" * 51, "phone": "12345"})
    check(sorted(p.field for p in form.problems) == ["id_number", "name", "phone"], "every problem at once")
    known = store.validate("person", {"village": VILLAGE, "id_number": "11010519491231002X", "name": "王芳"})
    check(known.problems == [] and known.existing.id == pid, "a known number names the record it updates")
    check(store.pending_count() == waiting, "validating saves nothing")
    check([r.id for r in store.pick("person", "王", 5)] == [pid], "a reference field's candidates")
    check(store.pick("house", "王", 5) == [], "of the field's kind only")

    # Reopening keeps the device identity and the data.
    del store
    again = mc.FieldStore.open(path)
    check(again.node_id() == node, "node id survives a restart")
    check(again.get(pid).fields["phone"] == "13800138000", "data survives a restart")

# An encrypted store: unlocked by the passphrase, a wrong one is its own error.
with tempfile.TemporaryDirectory() as data:
    path = os.path.join(data, "field.db")
    locked = mc.FieldStore.open_encrypted(path, "口令 passphrase")
    pid = locked.capture("person", {"village": VILLAGE, "id_number": "11010519491231002x", "name": "王芳"})
    del locked
    check(mc.FieldStore.open_encrypted(path, "口令 passphrase").get(pid) is not None, "the passphrase unlocks")
    try:
        mc.FieldStore.open_encrypted(path, "wrong")
        check(False, "a wrong passphrase must not unlock")
    except mc.MobileError.WrongPassphrase:
        check(True, "a wrong passphrase is told as such")

print(f"python binding: {checks} passed, 0 failed")
