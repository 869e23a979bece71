import Foundation
import NIOCore
import NIOPosix
import SluiceNet
import Synchronization

/// A deliberately plain HTTP/1.1 client for end-to-end tests: one request per connection
/// (`connection: close`), the raw response kept, and the option to hang up after a few bytes
/// (a client disconnecting mid-stream).
public enum RawHTTPClient {
    public struct Response: Sendable {
        public let status: Int
        public let headers: [(String, String)]
        public let body: String

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    public static func request(
        port: Int, method: String = "POST", path: String, headers: [(String, String)] = [], body: String? = nil,
        hangUpAfterBytes: Int? = nil, onFirstBytes: (@Sendable () -> Void)? = nil, timeout: Duration = .seconds(30)
    ) async throws -> Response {
        var text = "\(method) \(path) HTTP/1.1\r\nhost: 127.0.0.1:\(port)\r\nconnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let body { text += "content-type: application/json\r\ncontent-length: \(body.utf8.count)\r\n" }
        text += "\r\n" + (body ?? "")
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(hostOrAddress: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        // A gateway that never answers fails the test instead of hanging the run.
        let expired = ExpiryFlag()
        let deadline = channel.channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            expired.value.store(true, ordering: .relaxed)
            channel.channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        let raw: String
        do {
            raw = try await read(channel, request: text, hangUpAfterBytes: hangUpAfterBytes, onFirstBytes: onFirstBytes)
        } catch where expired.value.load(ordering: .relaxed) {
            throw RawHTTPClientError.noAnswer(path: path, within: timeout)
        }
        if expired.value.load(ordering: .relaxed) { throw RawHTTPClientError.noAnswer(path: path, within: timeout) }
        return parse(raw)
    }

    private static func read(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, request text: String, hangUpAfterBytes: Int?,
                             onFirstBytes: (@Sendable () -> Void)?) async throws -> String {
        try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: text))
            var received = ByteBuffer()
            for try await var chunk in inbound {
                if received.readableBytes == 0 { onFirstBytes?() }
                received.writeBuffer(&chunk)
                if let limit = hangUpAfterBytes, received.readableBytes >= limit { break }
            }
            return String(buffer: received)
        }
    }

    private final class ExpiryFlag: Sendable {
        let value = Atomic<Bool>(false)
    }

    public enum RawHTTPClientError: Error {
        case noAnswer(path: String, within: Duration)
    }

    static func parse(_ raw: String) -> Response {
        guard let split = raw.range(of: "\r\n\r\n") else { return Response(status: 0, headers: [], body: raw) }
        let lines = raw[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(lines.first?.split(separator: " ").dropFirst().first ?? "") ?? 0
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        var body = String(raw[split.upperBound...])
        if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" && $0.1.lowercased() == "chunked" }) {
            body = dechunk(body)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// Removes chunked transfer framing (sizes in hex, CRLF-separated).
    static func dechunk(_ text: String) -> String {
        var output = ""
        var rest = Substring(text)
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16) {
            if size == 0 { break }
            let start = lineEnd.upperBound
            let utf8 = rest.utf8
            guard let end = utf8.index(start, offsetBy: size, limitedBy: utf8.endIndex) else {
                output += rest[start...]
                break
            }
            output += rest[start..<end]
            rest = rest[end...]
            if rest.hasPrefix("\r\n") { rest = rest.dropFirst() }  // "\r\n" is one Character
        }
        return output
    }
}
