import Foundation
import Hummingbird

/// The admin API's request context: the authenticated caller, and JSON with ISO 8601 dates.
public struct AdminRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var caller: AdminCaller?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.caller = nil
    }

    /// Admin bodies are small; anything larger is refused before it is read.
    public var maxUploadSize: Int { 64 * 1024 }

    public var responseEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = .sortedKeys
        return encoder
    }

    /// The caller; the auth middleware guarantees one on every /admin/v1 route.
    func requireCaller() throws -> AdminCaller {
        guard let caller else { throw AdminError.unauthorized }
        return caller
    }
}
