import Foundation
import NIOCore

/// Watches an OpenAI-style SSE stream as it passes: finds the usage chunk the gateway asked
/// for (`stream_options.include_usage`), drops it when the client did not ask, and counts the
/// chunks that delivered text (the fallback usage when a stream is cut or reports none).
///
/// Events are passed on whole: bytes of an incomplete event wait for the rest (events are
/// small; a partial one is held for one upstream read at most).
struct ServerSentEventsFilter {
    let dropUsageChunk: Bool
    private var pending = ByteBuffer()
    private(set) var usage: ReportedUsage?
    private(set) var contentChunks = 0

    init(dropUsageChunk: Bool) {
        self.dropUsageChunk = dropUsageChunk
    }

    /// Feeds one upstream chunk; returns the bytes to send to the client now.
    mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
        var chunk = chunk
        pending.writeBuffer(&chunk)
        var output = ByteBuffer()
        while let end = Self.eventEnd(in: pending) {
            let event = pending.readSlice(length: end)!
            if keep(event) { output.writeImmutableBuffer(event) }
        }
        pending.discardReadBytes()
        return output
    }

    /// Whatever is left when the upstream ends (an unterminated last event).
    mutating func flush() -> ByteBuffer {
        defer { pending.clear() }
        guard pending.readableBytes > 0, keep(pending) else { return ByteBuffer() }
        return pending
    }

    /// Index just past the blank line ending the first complete event, if any.
    private static func eventEnd(in buffer: ByteBuffer) -> Int? {
        let view = buffer.readableBytesView
        var index = view.startIndex
        var previousNewline = false
        while index < view.endIndex {
            let byte = view[index]
            if byte == UInt8(ascii: "\n") {
                if previousNewline { return index - view.startIndex + 1 }
                previousNewline = true
            } else if byte != UInt8(ascii: "\r") {
                previousNewline = false
            }
            index += 1
        }
        return nil
    }

    private mutating func keep(_ event: ByteBuffer) -> Bool {
        let text = String(buffer: event)
        guard let dataStart = text.range(of: "data:") else { return true }
        let payload = text[dataStart.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        if payload == "[DONE]" { return true }
        if Self.carriesText(payload) { contentChunks += 1 }
        guard payload.contains("\"usage\""), let json = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any]
        else { return true }
        if let usage = json["usage"] as? [String: Any] {
            self.usage = ReportedUsage(usage)
            let choices = json["choices"] as? [Any] ?? []
            if choices.isEmpty { return !dropUsageChunk }
        }
        return true
    }

    /// Whether a chunk delivers generated text: a non-empty `"content"` (chat) or `"text"`
    /// (completions) string. Role-only and finish chunks carry none. About one token each.
    static func carriesText(_ payload: String) -> Bool {
        for field in ["\"content\":", "\"text\":"] {
            guard let found = payload.range(of: field) else { continue }
            let rest = payload[found.upperBound...].drop { $0 == " " }
            if rest.hasPrefix("\""), !rest.dropFirst().hasPrefix("\"") { return true }
        }
        return false
    }
}

/// Usage from a complete (non-streamed) response body. Only the `"usage"` object is parsed
/// (found by a byte scan): parsing the whole answer cost more than the rest of the request path.
enum ResponseUsage {
    static func parse(_ body: ByteBuffer) -> ReportedUsage? {
        let bytes = Array(body.readableBytesView)
        guard let object = usageObject(in: bytes),
              let usage = try? JSONSerialization.jsonObject(with: Data(object)) as? [String: Any] else { return nil }
        return ReportedUsage(usage)
    }

    private static let key = Array("\"usage\"".utf8)

    /// The bytes of the `{...}` following the last `"usage":` (servers put usage last).
    static func usageObject(in bytes: [UInt8]) -> ArraySlice<UInt8>? {
        var index = bytes.count - key.count
        while index >= 0 {
            if bytes[index] == key[0], bytes[index..<(index + key.count)].elementsEqual(key) {
                var start = index + key.count
                while start < bytes.count, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: ":")
                        || bytes[start] == UInt8(ascii: "\n") || bytes[start] == UInt8(ascii: "\t") {
                    start += 1
                }
                guard start < bytes.count, bytes[start] == UInt8(ascii: "{") else { return nil }
                var depth = 0
                var inString = false
                var escaped = false
                for end in start..<bytes.count {
                    let byte = bytes[end]
                    if inString {
                        if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                        continue
                    }
                    switch byte {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"): depth += 1
                    case UInt8(ascii: "}"):
                        depth -= 1
                        if depth == 0 { return bytes[start...end] }
                    default: break
                    }
                }
                return nil
            }
            index -= 1
        }
        return nil
    }
}
