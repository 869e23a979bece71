import Foundation
import NIOCore

/// What the gateway reads from the Realtime events a backend sends: only `response.done`
/// matters (its `usage` is the bill of one response). Other events pass through unread: a cheap
/// byte search decides which ones are parsed at all.
public enum RealtimeEvent {
    /// The usage of a `response.done` event, or nil for any other event (or one without usage).
    public static func responseUsage(_ text: ByteBuffer) -> BilledUsage? {
        guard text.readableBytesView.firstRange(of: doneMarker) != nil,
              let object = try? JSONSerialization.jsonObject(with: Data(text.readableBytesView)) as? [String: Any],
              object["type"] as? String == "response.done",
              let response = object["response"] as? [String: Any],
              let usage = response["usage"] as? [String: Any] else { return nil }
        let input = ReportedUsage.count((usage["input_tokens"] as? NSNumber)?.doubleValue)
        let output = ReportedUsage.count((usage["output_tokens"] as? NSNumber)?.doubleValue)
        let cached = ReportedUsage.count(((usage["input_token_details"] as? [String: Any])?["cached_tokens"] as? NSNumber)?.doubleValue)
        guard let prompt = input.0, let completion = output.0 else { return nil }
        return BilledUsage(prompt: prompt, completion: completion, cachedPrompt: cached.0 ?? 0, source: .backend,
                           clamped: input.clamped || output.clamped)
    }

    private static let doneMarker = Array("\"response.done\"".utf8)

    /// An `error` event in OpenAI's Realtime shape, for `error`.
    static func error(_ error: OpenAIError) -> ByteBuffer {
        let detail: [String: Any] = ["type": error.type, "code": error.code, "message": error.message,
                                     "param": error.param ?? NSNull(), "event_id": NSNull()]
        let object: [String: Any] = ["type": "error", "event_id": "evt_" + RequestID.make().replacingOccurrences(of: "-", with: ""),
                                     "error": detail]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return ByteBuffer(bytes: data)
    }
}
