import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SluiceUpstream
import Synchronization

/// What the backends themselves serve: each backend's `GET /v1/models`, read every `interval`.
/// With it, the public model list shows a configured model only while one of its backends
/// says it serves that model (under the same name), with the backend's own details (owner,
/// creation time, context length). A backend that fails to answer keeps its last list.
public final class BackendModelDirectory: Service, Sendable {
    /// One entry of a backend's list, bounded and checked.
    public struct ServedModel: Sendable, Equatable {
        public let id: String
        public let ownedBy: String?
        public let created: Int?
        public let maxModelLength: Int?
    }

    private let backends: [Backend]
    private let client: UpstreamClient
    private let interval: Duration
    private let logger: Logger
    /// Backend (by identity) → what it last said it serves, by model id.
    private let served = Mutex<[ObjectIdentifier: [String: ServedModel]]>([:])

    public init(backends: [Backend], client: UpstreamClient, interval: Duration = .seconds(30), logger: Logger) {
        var seen = Set<ObjectIdentifier>()
        self.backends = backends.filter { seen.insert(ObjectIdentifier($0)).inserted }
        self.client = client
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.readAll()
                try? await Task.sleep(for: self.interval)
            }
        }
    }

    /// Whether any backend has answered yet (until then the configured list stands).
    public var hasRead: Bool { served.withLock { !$0.isEmpty } }

    /// What a backend of `route` says of the model it is routed as, or nil when none serves it.
    public func served(_ route: ModelRoute) -> ServedModel? {
        served.withLock { served in
            for backend in route.backends {
                if let model = served[ObjectIdentifier(backend)]?[route.name] { return model }
            }
            return nil
        }
    }

    func readAll() async {
        await withTaskGroup(of: Void.self) { group in
            for backend in backends { group.addTask { await self.read(backend) } }
        }
    }

    private func read(_ backend: Backend) async {
        do {
            let response = try await client.send(UpstreamRequest(method: .GET, path: "/v1/models", headers: ["accept": "application/json"]),
                                                  to: backend)
            let body = try await response.collect(limit: 1 << 20)
            guard response.head.status == .ok else { throw UpstreamError.protocolError("status \(response.head.status.code)") }
            let list = Self.parse(body)
            served.withLock { $0[ObjectIdentifier(backend)] = list }
        } catch {
            logger.warning("a backend's model list could not be read", metadata: ["backend": "\(backend.url)", "error": "\(error)"])
        }
    }

    /// `{"data": [{"id", "owned_by", "created", "max_model_len"}, ...]}`: at most 1,000 entries,
    /// ids of 1 to 256 bytes; anything else is left out.
    static func parse(_ body: ByteBuffer) -> [String: ServedModel] {
        let object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any]
        var list: [String: ServedModel] = [:]
        for entry in (object?["data"] as? [[String: Any]] ?? []).prefix(1_000) {
            guard let id = entry["id"] as? String, (1...256).contains(id.utf8.count) else { continue }
            list[id] = ServedModel(id: id, ownedBy: (entry["owned_by"] as? String).map { String($0.prefix(128)) },
                                   created: entry["created"] as? Int, maxModelLength: entry["max_model_len"] as? Int)
        }
        return list
    }
}
