import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import SluiceUpstream

/// The upstream deadlines on an embedded channel, its clock advanced by hand: the first byte,
/// the gap between parts and the whole answer, each closing the connection and saying which.
/// The handler's one timer is re-armed lazily, so a long answer that keeps arriving must
/// outlive many idle periods, and a shorter deadline must still fire on time.
@Suite("Upstream deadlines")
struct UpstreamDeadlineHandlerTests {
    final class Connection {
        let channel = EmbeddedChannel()
        let expired = NIOLockedValueBox<UpstreamTimeout?>(nil)

        init(firstByte: Int64, idle: Int64, total: Int64) throws {
            try channel.pipeline.syncOperations.addHandler(UpstreamDeadlineHandler(
                firstByte: .seconds(firstByte), idle: .seconds(idle), total: .seconds(total), expired: expired))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8000)).wait()
        }

        func sendRequest() throws {
            try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1")))
        }

        func receive(_ part: HTTPClientResponsePart) throws {
            try channel.writeInbound(part)
            _ = try channel.readInbound(as: HTTPClientResponsePart.self)
        }

        func advance(seconds: Int64) {
            advance(milliseconds: seconds * 1_000)
        }

        func advance(milliseconds: Int64) {
            (channel.eventLoop as! EmbeddedEventLoop).advanceTime(by: .milliseconds(milliseconds))
        }

        var isOpen: Bool { channel.isActive }
        var reason: UpstreamTimeout? { expired.withLockedValue { $0 } }
    }

    static let head = HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok))
    static let chunk = HTTPClientResponsePart.body(ByteBuffer(string: "data: x\n\n"))

    @Test func aBackendThatNeverAnswersTimesOutAtTheFirstByteDeadline() throws {
        let connection = try Connection(firstByte: 10, idle: 2, total: 60)
        try connection.sendRequest()
        connection.advance(seconds: 9)
        #expect(connection.isOpen)
        connection.advance(seconds: 1)
        #expect(!connection.isOpen && connection.reason == .firstByte)
    }

    @Test func aStreamThatKeepsComingOutlivesManyIdlePeriodsThenStallsIntoTheIdleDeadline() throws {
        let connection = try Connection(firstByte: 10, idle: 2, total: 60)
        try connection.sendRequest()
        connection.advance(seconds: 5)
        try connection.receive(Self.head)
        for _ in 0..<20 {  // 20 s of parts a second apart: past the first-byte and ten idle deadlines
            connection.advance(seconds: 1)
            try connection.receive(Self.chunk)
        }
        #expect(connection.isOpen && connection.reason == nil)
        connection.advance(seconds: 1)
        #expect(connection.isOpen)
        connection.advance(seconds: 1)
        #expect(!connection.isOpen && connection.reason == .idle)
    }

    @Test func aStreamThatNeverStallsStillEndsAtTheTotalDeadline() throws {
        let connection = try Connection(firstByte: 10, idle: 2, total: 30)
        try connection.sendRequest()
        try connection.receive(Self.head)
        for _ in 0..<29 {
            connection.advance(seconds: 1)
            try connection.receive(Self.chunk)
        }
        #expect(connection.isOpen)
        connection.advance(seconds: 1)
        #expect(!connection.isOpen && connection.reason == .total)
    }

    /// A part that moves the deadline after the timer was set: when the stream then stalls,
    /// the timer, finding the deadline moved, waits for it rather than forget it.
    @Test func aStallAfterTheDeadlineMovedStillTimesOut() throws {
        let connection = try Connection(firstByte: 10, idle: 2, total: 60)
        try connection.sendRequest()
        try connection.receive(Self.head)  // idle deadline 2 s from now
        connection.advance(seconds: 1)
        try connection.receive(Self.chunk)  // moved to 3 s; the timer still fires at 2 s
        connection.advance(seconds: 1)
        #expect(connection.isOpen)
        connection.advance(seconds: 1)
        #expect(!connection.isOpen && connection.reason == .idle)
    }

    /// Between requests a keep-alive connection has no deadline; the next request's first-byte
    /// deadline applies from its own start, even when sooner than the idle one the timer was
    /// last set for.
    @Test func aFinishedAnswerLeavesNoDeadlineAndTheNextRequestGetsItsOwn() throws {
        let connection = try Connection(firstByte: 1, idle: 5, total: 60)
        try connection.sendRequest()
        try connection.receive(Self.head)
        try connection.receive(.end(nil))
        connection.advance(seconds: 100)
        #expect(connection.isOpen && connection.reason == nil)

        try connection.sendRequest()  // the timer: first byte, in 1 s
        connection.advance(milliseconds: 500)
        try connection.receive(Self.head)  // deadline now 5 s away
        connection.advance(milliseconds: 500)  // the timer fires, finds it moved: set for 4.5 s on
        try connection.receive(.end(nil))
        try connection.sendRequest()  // first byte due in 1 s, before that timer
        connection.advance(milliseconds: 999)
        #expect(connection.isOpen)
        connection.advance(milliseconds: 1)
        #expect(!connection.isOpen && connection.reason == .firstByte)
    }
}
