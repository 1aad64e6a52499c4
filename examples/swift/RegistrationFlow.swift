// What an iOS registration screen does with Baylink's phone SDK: the Swift twin of
// examples/kotlin/RegistrationFlow.kt, against the Swift binding UniFFI generates
// (`import BaylinkMobileCore`, see docs/mobile.md for the XCFramework layout). This machine has
// no Swift toolchain: the Kotlin example is compiled and run in the tests; this one is not.
import BaylinkMobileCore
import Foundation

/// The outcome of saving a form, as the screen shows it.
enum Saved {
    case captured(id: String, updates: RecordSummary?)
    case refused(problems: [String: String])
}

final class RegistrationFlow {
    private let store: FieldStore

    init(path: String, passphrase: String) throws {
        store = try FieldStore.openEncrypted(path: path, passphrase: passphrase)
    }

    /// The form of a kind, built from the data model.
    func form(kind: String) throws -> [FieldInfo] {
        try fieldSpecs(kind: kind)
    }

    /// Live feedback under the ID-number field while the officer types.
    func typing(idNumber: String) -> IdNumberInfo {
        decodeIdNumber(text: idNumber)
    }

    /// Checks, then captures; the problems by field, in Chinese, when refused.
    func save(kind: String, values: [String: String]) throws -> Saved {
        let check = try store.validate(kind: kind, fields: values)
        if !check.problems.isEmpty {
            return .refused(problems: Dictionary(
                check.problems.map { ($0.field, $0.messageZh) }, uniquingKeysWith: { a, _ in a }))
        }
        do {
            return .captured(id: try store.capture(kind: kind, fields: values), updates: check.existing)
        } catch MobileError.Invalid(let problems) {
            return .refused(problems: Dictionary(
                problems.map { ($0.field, $0.messageZh) }, uniquingKeysWith: { a, _ in a }))
        }
    }

    /// A list screen's rows.
    func rows(kind: String) throws -> [RecordSummary] {
        try store.list(kind: kind, village: nil, limit: 50, offset: 0)
    }

    /// Calls `onChange` whenever records change, the sync's pages included.
    func watch(_ onChange: @escaping @Sendable (StoreChange) -> Void) -> UInt64 {
        store.addListener(listener: Listener(onChange))
    }

    /// Syncs off the main actor, reporting progress.
    func sync(onProgress: @escaping @Sendable (String, UInt64, UInt64) -> Void) async throws -> SyncReport {
        let store = self.store
        return try await Task.detached {
            try store.sync(progress: Progress(onProgress))
        }.value
    }

    /// What the screen says when a sync fails: no person's data, and what to do.
    func explain(_ error: Error) -> String {
        switch error {
        case MobileError.Network(let kind, _, _) where kind == "tls":
            return "服务器证书不受信任，请联系管理员"
        case MobileError.Network(let kind, _, _) where kind == "unavailable" || kind == "other":
            return "服务器暂不可用，稍后再试"
        case MobileError.Network:
            return "网络不通，记录已保存在本机，稍后自动同步"
        case MobileError.Auth(let code, _):
            return "请重新登录（\(code)）"
        case MobileError.Cancelled:
            return "同步已取消"
        default:
            return "同步失败"
        }
    }
}

private final class Listener: ChangeListener, @unchecked Sendable {
    private let onChange: @Sendable (StoreChange) -> Void
    init(_ onChange: @escaping @Sendable (StoreChange) -> Void) { self.onChange = onChange }
    func changed(change: StoreChange) { onChange(change) }
}

private final class Progress: SyncProgress, @unchecked Sendable {
    private let onProgress: @Sendable (String, UInt64, UInt64) -> Void
    init(_ onProgress: @escaping @Sendable (String, UInt64, UInt64) -> Void) { self.onProgress = onProgress }
    func progress(phase: String, done: UInt64, total: UInt64) { onProgress(phase, done, total) }
}
