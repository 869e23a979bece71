import Foundation
import NIOCore

/// Watches an OpenAI-style SSE stream as it passes: finds the usage chunk the gateway asked
/// for (`stream_options.include_usage`), drops it when the client did not ask, and counts the
/// chunks that delivered text (the fallback usage when a stream is cut or reports none).
///
/// Events are passed on whole: bytes of an incomplete event wait for the rest (events are
/// small; a partial one is held for one upstream read at most).
public struct ServerSentEventsFilter: Sendable {
    let dropUsageChunk: Bool
    private var pending = ByteBuffer()
    private(set) var usage: ReportedUsage?
    private(set) var contentChunks = 0

    public init(dropUsageChunk: Bool) {
        self.dropUsageChunk = dropUsageChunk
    }

    /// Feeds one upstream chunk; returns the bytes to send to the client now.
    public mutating func feed(_ chunk: ByteBuffer) -> ByteBuffer {
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
    public mutating func flush() -> ByteBuffer {
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

    /// Decides on one event by scanning its bytes: no String, and JSON is parsed only for a
    /// usage object (once a stream), not for the `"usage": null` vLLM puts in every chunk.
    private mutating func keep(_ event: ByteBuffer) -> Bool {
        event.withUnsafeReadableBytes { bytes in
            guard let start = Self.find(Self.dataPrefix, in: bytes, from: 0) else { return true }
            let payload = UnsafeRawBufferPointer(rebasing: bytes[(start + Self.dataPrefix.count)...])
            if Self.find(Self.done, in: payload, from: 0) != nil, payload.count < 32 { return true }
            if Self.carriesText(payload) { contentChunks += 1 }
            guard let usageStart = Self.valueStart(after: Self.usageKey, in: payload),
                  payload[usageStart] == UInt8(ascii: "{"),
                  let object = ResponseUsage.usageObject(in: Array(payload)),
                  let usage = ResponseUsage.counts(object)
            else { return true }
            self.usage = usage
            // The usage-only chunk the gateway asked for: no choices, or an empty list.
            guard let choices = Self.valueStart(after: Self.choicesKey, in: payload) else { return !dropUsageChunk }
            if payload[choices] == UInt8(ascii: "["), let next = Self.skipSpace(payload, from: choices + 1),
               payload[next] == UInt8(ascii: "]") {
                return !dropUsageChunk
            }
            return true
        }
    }

    private static let dataPrefix = Array("data:".utf8)
    private static let done = Array("[DONE]".utf8)
    private static let usageKey = Array("\"usage\"".utf8)
    private static let choicesKey = Array("\"choices\"".utf8)
    private static let textKeys = [Array("\"content\"".utf8), Array("\"text\"".utf8)]

    /// Whether a chunk delivers generated text: a non-empty `"content"` (chat) or `"text"`
    /// (completions) string. Role-only and finish chunks carry none. About one token each.
    static func carriesText(_ payload: UnsafeRawBufferPointer) -> Bool {
        for key in textKeys {
            guard let value = valueStart(after: key, in: payload) else { continue }
            if payload[value] == UInt8(ascii: "\""), value + 1 < payload.count, payload[value + 1] != UInt8(ascii: "\"") {
                return true
            }
        }
        return false
    }

    /// The first byte of the value after `key` and its colon, if the key is there.
    private static func valueStart(after key: [UInt8], in bytes: UnsafeRawBufferPointer) -> Int? {
        guard let found = find(key, in: bytes, from: 0),
              let colon = skipSpace(bytes, from: found + key.count), bytes[colon] == UInt8(ascii: ":") else { return nil }
        return skipSpace(bytes, from: colon + 1)
    }

    private static func skipSpace(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return index
            }
        }
        return nil
    }

    private static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard let first = needle.first, bytes.count >= needle.count else { return nil }
        var index = start
        let last = bytes.count - needle.count
        while index <= last {
            if bytes[index] == first {
                var matched = true
                for offset in 1..<needle.count where bytes[index + offset] != needle[offset] {
                    matched = false
                    break
                }
                if matched { return index }
            }
            index += 1
        }
        return nil
    }
}

/// Usage from a complete (non-streamed) response body. Only the `"usage"` object is parsed
/// (found by a byte scan): parsing the whole answer cost more than the rest of the request path.
enum ResponseUsage {
    static func parse(_ body: ByteBuffer) -> ReportedUsage? {
        usageObject(in: Array(body.readableBytesView)).flatMap(counts)
    }

    private static let countNames: Set<String> = ["prompt_tokens", "completion_tokens", "prompt_tokens_details"]
    private static let detailNames: Set<String> = ["cached_tokens"]

    /// The counts of a usage object (its bytes); nil when it is not well-formed JSON. One pass
    /// with the request body's scanner: no Foundation objects on the response path.
    static func counts(_ object: ArraySlice<UInt8>) -> ReportedUsage? {
        object.withUnsafeBytes { bytes -> ReportedUsage? in
            guard let members = try? JSONBodyScanner.scan(bytes, wanted: countNames) else { return nil }
            let (prompt, promptClamped) = count(members["prompt_tokens"], in: bytes)
            let (completion, completionClamped) = count(members["completion_tokens"], in: bytes)
            var cached: Int?
            if let details = members["prompt_tokens_details"], details.kind == .object,
               let inner = try? JSONBodyScanner.scan(UnsafeRawBufferPointer(rebasing: bytes[details.value]), wanted: detailNames) {
                // A nonsensical cached count is ignored: it can only lower a bill.
                let (value, clamped) = count(inner["cached_tokens"], in: UnsafeRawBufferPointer(rebasing: bytes[details.value]))
                cached = clamped ? nil : value
            }
            return ReportedUsage(prompt: prompt, completion: completion, cachedPrompt: cached,
                                 clamped: promptClamped || completionClamped)
        }
    }

    private static func count(_ member: JSONBodyScanner.Member?, in bytes: UnsafeRawBufferPointer) -> (Int?, clamped: Bool) {
        guard let member else { return (nil, false) }
        switch member.kind {
        case .null: return (nil, false)
        case .number:
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[member.value]), as: UTF8.self)
            return ReportedUsage.count(Double(text))
        default: return (nil, true)
        }
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
