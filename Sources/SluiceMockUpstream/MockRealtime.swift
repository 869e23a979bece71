import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore

/// The mock's OpenAI Realtime endpoint (`GET /v1/realtime?model=…`, WebSocket): it says
/// `session.created`, acknowledges `session.update` and `conversation.item.create`, and answers
/// each `response.create` with `response.created`, a few text deltas and `response.done` whose
/// `usage` counts `realtimeInputTokens` in and `completionTokens` out.
extension MockUpstream {
    public func realtimeRouter() -> Router<BasicWebSocketRequestContext> {
        let router = Router(context: BasicWebSocketRequestContext.self)
        let behavior = self.behavior
        router.ws("/v1/realtime", shouldUpgrade: { request, _ in
            for (name, value) in behavior.requiredHeaders {
                guard let field = HTTPField.Name(name), request.headers[field] == value else {
                    throw HTTPError(.unauthorized, message: "missing or wrong \(name)")
                }
            }
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, context in
            let model = context.request.uri.queryParameters.get("model") ?? "mock-model"
            var responses = 0
            try await outbound.writeTextMessage(Self.realtimeEvent("session.created", [
                "session": ["id": "sess_mock", "object": "realtime.session", "model": model],
            ]))
            for try await message in inbound.messages(maxSize: 16 << 20) {
                guard case .text(let text) = message,
                      let event = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                      let type = event["type"] as? String else {
                    try await outbound.writeTextMessage(Self.realtimeEvent("error", [
                        "error": ["type": "invalid_request_error", "code": "invalid_event", "message": "events are JSON text"],
                    ]))
                    continue
                }
                switch type {
                case "session.update":
                    try await outbound.writeTextMessage(Self.realtimeEvent("session.updated", ["session": event["session"] ?? [:]]))
                case "conversation.item.create":
                    try await outbound.writeTextMessage(Self.realtimeEvent("conversation.item.created", ["item": event["item"] ?? [:]]))
                case "response.create":
                    responses += 1
                    try await respond(number: responses, outbound: outbound)
                default:
                    break
                }
            }
        })
        return router
    }

    private func respond(number: Int, outbound: WebSocketOutboundWriter) async throws {
        let id = "resp_mock_\(number)"
        try await outbound.writeTextMessage(Self.realtimeEvent("response.created", [
            "response": ["id": id, "object": "realtime.response", "status": "in_progress"],
        ]))
        for index in 0..<behavior.completionTokens {
            if behavior.tokensPerSecond > 0 { try await Task.sleep(for: .seconds(1 / behavior.tokensPerSecond)) }
            try await outbound.writeTextMessage(Self.realtimeEvent("response.output_text.delta", [
                "response_id": id, "delta": index == 0 ? "Hello" : " token",
            ]))
        }
        let input = behavior.realtimeInputTokens, output = behavior.completionTokens
        try await outbound.writeTextMessage(Self.realtimeEvent("response.done", [
            "response": [
                "id": id, "object": "realtime.response", "status": "completed",
                "usage": [
                    "total_tokens": input + output, "input_tokens": input, "output_tokens": output,
                    "input_token_details": ["cached_tokens": 0, "text_tokens": input, "audio_tokens": 0],
                    "output_token_details": ["text_tokens": output, "audio_tokens": 0],
                ] as [String: Any],
            ] as [String: Any],
        ]))
    }

    static func realtimeEvent(_ type: String, _ fields: [String: Any]) -> String {
        var object = fields
        object["type"] = type
        object["event_id"] = "evt_\(UUID().uuidString.prefix(12))"
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
