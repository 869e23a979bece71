import Foundation
import NIOCore
import NIOHTTP1
import SluiceUpstream

/// One HTTP exchange with a billing system, on the gateway's upstream client (keep-alive, TLS,
/// deadlines). Answers are small; anything beyond 1 MiB is cut.
struct BillingHTTP: Sendable {
    let client: UpstreamClient
    let endpoint: Backend

    struct Answer: Sendable {
        let status: Int
        let body: String
    }

    func post(path: String, headers: [(String, String)], body: String) async -> Result<Answer, UpstreamError> {
        let request = UpstreamRequest(method: .POST, path: path, headers: HTTPHeaders(headers), body: ByteBuffer(string: body))
        do {
            let response = try await client.send(request, to: endpoint)
            let status = Int(response.head.status.code)
            do {
                let bytes = try await response.collect(limit: 1 << 20)
                return .success(Answer(status: status, body: String(buffer: bytes)))
            } catch {
                return .failure(.connectionClosed)
            }
        } catch {
            return .failure(error)
        }
    }

    /// The usual reading of an answer: 2xx delivered, 429 and 5xx retried, other 4xx refused.
    static func outcome(_ result: Result<Answer, UpstreamError>) -> DeliveryOutcome {
        switch result {
        case .failure(let error):
            return .retry("\(error)")
        case .success(let answer):
            switch answer.status {
            case 200..<300: return .delivered
            case 429, 500...: return .retry("HTTP \(answer.status)")
            default: return .refused(status: answer.status, reason: String(answer.body.prefix(500)))
            }
        }
    }
}
