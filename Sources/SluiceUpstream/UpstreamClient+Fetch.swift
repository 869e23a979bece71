import Foundation
import NIOCore
import NIOHTTP1

extension UpstreamClient {
    /// A small GET (a discovery document, a key set): the status and at most `limit` bytes of
    /// body, within the client's timeouts.
    public func fetch(_ url: String, limit: Int = 1 << 20) async throws -> (status: Int, body: String) {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme, let host = parts.host else {
            throw BackendURLError(url: url)
        }
        let origin = "\(scheme)://\(host.contains(":") ? "[\(host)]" : host)" + (parts.port.map { ":\($0)" } ?? "")
        let path = (parts.percentEncodedPath.isEmpty ? "/" : parts.percentEncodedPath)
            + (parts.percentEncodedQuery.map { "?\($0)" } ?? "")
        // `connection: close`: the pool is keyed by the backend object, and this one lives for one
        // call; a connection given back under its key would stay idle for good (or, once the key's
        // memory is reused, be handed to another backend).
        let request = UpstreamRequest(method: .GET, path: path,
                                      headers: HTTPHeaders([("accept", "application/json"), ("connection", "close")]))
        let response = try await send(request, to: try Backend(url: origin))
        let body = try await response.collect(limit: limit)
        return (Int(response.head.status.code), String(buffer: body))
    }
}
