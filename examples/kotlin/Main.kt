// Drives RegistrationFlow as an officer would, against the server named on the command line:
// sign in, build the person form from the data model, type an ID number, save a wrong form and
// a right one, sync in the background while the list screen reads, hear the changes. Prints
// "kotlin: N passed, 0 failed" or exits non-zero with what failed.
package cn.baylink.example

import cn.baylink.mobilecore.FieldStore
import cn.baylink.mobilecore.MobileException
import cn.baylink.mobilecore.StoreChange
import java.io.File
import java.util.Collections
import kotlin.system.exitProcess

private var passed = 0

private fun check(condition: Boolean, what: String) {
    if (!condition) {
        System.err.println("kotlin: FAILED: $what")
        exitProcess(1)
    }
    passed++
}

fun main(args: Array<String>) {
    val (server, username, password, dir) = args
    val village = "441303006001"
    val store = FieldStore.open(File(dir, "field.db").path)
    val flow = RegistrationFlow(store)
    val heard = Collections.synchronizedList(mutableListOf<StoreChange>())
    flow.watch { heard.add(it) }

    store.login(server, username, password, "kotlin phone")
    check(store.session()?.villages == listOf(village), "signed in to the officer's village")

    val form = flow.form("person")
    check(form.fields.first { it.name == "id_number" }.input == "id_number", "the form knows its inputs")
    check(form.derived.map { it.name }.containsAll(listOf("gender", "birth_date")), "derived fields shown read-only")
    check(form.inputs().none { it.name == "gender" || it.name == "origin_name" }, "a resident ID fills gender")
    check(form.inputs("passport").any { it.name == "gender" }, "a passport holder's gender is typed")

    val typed = flow.typing("11010519491231002")
    check(typed.regionName == "北京市朝阳区" && typed.birthDate == "1949-12-31" && !typed.valid, "live feedback")

    val wrong = flow.save("person", mapOf("village" to village, "id_number" to "110105194912310021", "name" to "王芳"))
    check(wrong is Saved.Refused && wrong.problems.containsKey("id_number"), "a wrong check character is refused")

    val right = flow.save("person", mapOf("village" to village, "id_number" to "11010519491231002x", "name" to "王芳"))
    check(right is Saved.Captured && right.updates == null, "a new person captured")
    val id = (right as Saved.Captured).id
    check(heard.any { it.source == "local" && id in it.ids }, "the list hears the capture")

    try {
        store.capture("person", mapOf("village" to village, "name" to "无证件"))
        check(false, "a capture without an ID number is refused")
    } catch (e: MobileException.Invalid) {
        check(e.problems.any { it.field == "id_number" }, "the error names the field")
    }

    var result: Result<cn.baylink.mobilecore.SyncReport>? = null
    val phases = Collections.synchronizedList(mutableListOf<String>())
    val sync = flow.syncInBackground({ phase, _, _ -> phases.add(phase) }) { result = it }
    while (sync.isAlive) {
        flow.rows("person") // the list screen keeps reading meanwhile
        Thread.sleep(5)
    }
    sync.join()
    val report = result?.getOrThrow()
    check(report != null && report.pushed > 0u, "the sync pushed the capture")
    check("push" in phases && "pull" in phases, "progress came for both phases")
    check(store.pendingCount() == 0uL, "nothing waits after the sync")
    check(heard.any { it.source == "sync" && id in it.ids }, "the sync's settling is heard")
    check(flow.rows("person").any { it.id == id }, "the person is listed")

    // A server that cannot be reached: the error says so, for the screen to tell the officer.
    val closed = java.net.ServerSocket(0).use { it.localPort }
    val elsewhere = FieldStore.open(File(dir, "elsewhere.db").path)
    try {
        elsewhere.login("http://127.0.0.1:$closed", username, password, "phone")
        check(false, "an unreachable server fails")
    } catch (e: MobileException.Network) {
        check(e.kind == "connect", "an unreachable server is told as such: ${e.kind}")
        check(flow.explain(e).startsWith("网络不通"), "and the screen says so")
    }
    println("kotlin: $passed passed, 0 failed")
}
