// What an Android registration screen does with Baylink's phone SDK, free of Android classes so
// that it compiles and runs on a plain JVM (the test suite runs it against a real server). In an
// app, a ViewModel holds one of these; the store is opened once in Application.onCreate.
package cn.baylink.example

import cn.baylink.mobilecore.ChangeListener
import cn.baylink.mobilecore.FieldInfo
import cn.baylink.mobilecore.FieldStore
import cn.baylink.mobilecore.IdNumberInfo
import cn.baylink.mobilecore.MobileException
import cn.baylink.mobilecore.RecordSummary
import cn.baylink.mobilecore.StoreChange
import cn.baylink.mobilecore.SyncProgress
import cn.baylink.mobilecore.SyncReport
import cn.baylink.mobilecore.decodeIdNumber
import cn.baylink.mobilecore.fieldSpecs
import kotlin.concurrent.thread

/** A form's fields: what the officer fills, and what the store fills and shows read-only. */
data class Form(val kind: String, val fields: List<FieldInfo>) {
    /** The inputs for a document type: gender and birth date only where nothing derives them. */
    fun inputs(idType: String = "resident_id") = fields.filter {
        it.editable && !(it.derivedWhen == "id_type=resident_id" && idType == "resident_id")
    }

    /** What the store fills, shown read-only (or as an input where `inputs` lists it). */
    val derived get() = fields.filter { it.derived }
}

/** The outcome of saving a form, as the screen shows it. */
sealed interface Saved {
    data class Captured(val id: String, val updates: RecordSummary?) : Saved
    data class Refused(val problems: Map<String, String>) : Saved
}

class RegistrationFlow(private val store: FieldStore) {
    /** The form of a kind, built from the data model (no field is hard-coded in the app). */
    fun form(kind: String): Form = Form(kind, fieldSpecs(kind))

    /** Live feedback under the ID-number field while the officer types. */
    fun typing(idNumber: String): IdNumberInfo = decodeIdNumber(idNumber)

    /** Checks, then captures; the problems by field, in Chinese, when refused. */
    fun save(kind: String, values: Map<String, String>): Saved {
        val check = store.validate(kind, values)
        if (check.problems.isNotEmpty()) {
            return Saved.Refused(check.problems.associate { it.field to it.messageZh })
        }
        return try {
            Saved.Captured(store.capture(kind, values), check.existing)
        } catch (e: MobileException.Invalid) {
            Saved.Refused(e.problems.associate { it.field to it.messageZh })
        }
    }

    /** A list screen's rows. */
    fun rows(kind: String): List<RecordSummary> = store.list(kind, null, 50u, 0u)

    /** Refreshes `onChange` whenever records change, the sync's pages included. */
    fun watch(onChange: (StoreChange) -> Unit): ULong =
        store.addListener(object : ChangeListener {
            override fun changed(change: StoreChange) = onChange(change)
        })

    /** Syncs on a background thread (a WorkManager worker in an app), reporting progress. */
    fun syncInBackground(
        onProgress: (String, ULong, ULong) -> Unit,
        onDone: (Result<SyncReport>) -> Unit,
    ): Thread = thread(name = "baylink-sync") {
        val progress = object : SyncProgress {
            override fun progress(phase: String, done: ULong, total: ULong) =
                onProgress(phase, done, total)
        }
        onDone(runCatching { store.sync(progress) })
    }

    /** What the screen says when a sync fails: no person's data, and what to do. */
    fun explain(e: Throwable): String = when (e) {
        is MobileException.Network -> when (e.kind) {
            "tls" -> "服务器证书不受信任，请联系管理员"
            "dns", "connect", "timeout", "interrupted" -> "网络不通，记录已保存在本机，稍后自动同步"
            else -> "服务器暂不可用，稍后再试"
        }
        is MobileException.Auth -> "请重新登录（${e.code}）"
        is MobileException.Cancelled -> "同步已取消"
        else -> "同步失败：${e.message}"
    }
}
