import NIOCore
import SluiceDataPlane

/// The body of one public request, from its head to the pipeline's `readBody()`. Pure: the
/// channel handler feeds it the decoder's parts and the pipeline's demand, and carries out the
/// actions it returns.
///
/// Nothing is read from the socket for the body until the pipeline asks for it (after the key
/// passed): a caller that will be refused costs no buffering. Once asked for, the body is
/// collected up to `limit`; past that it fails as too large, and the rest is discarded.
struct RequestBodyStateMachine {
    enum State {
        /// No request, or one whose body nobody will read (answered from its head).
        case discarding
        /// Collecting; `demanded` once the pipeline waits for it.
        case receiving(ByteBuffer, demanded: Bool)
        /// The whole body, not yet asked for.
        case complete(ByteBuffer)
        /// Over the limit or broken off: the pipeline gets this error when it asks.
        case failed(OpenAIError)
        /// Handed over (or its failure was): what still arrives is discarded.
        case delivered
    }

    enum Action: Equatable {
        case none
        /// Resume reading from the socket.
        case read
        case deliver(ByteBuffer)
        case fail(OpenAIError)
    }

    private(set) var state: State = .discarding
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// A new request whose body the pipeline may read.
    mutating func expectBody() {
        state = .receiving(ByteBuffer(), demanded: false)
    }

    /// A new request answered from its head: its body, if any, is thrown away.
    mutating func discardBody() {
        state = .discarding
    }

    /// Reads are held while a body waits for the pipeline's decision to read it.
    var holdsReads: Bool {
        if case .receiving(_, demanded: false) = state { return true }
        return false
    }

    mutating func received(_ part: inout ByteBuffer) -> Action {
        guard case .receiving(var buffer, let demanded) = state else { return .none }
        guard buffer.readableBytes + part.readableBytes <= limit else {
            return fail(.tooLarge(limit), demanded: demanded)
        }
        state = .discarding  // lets `buffer` be uniquely referenced while it grows
        buffer.writeBuffer(&part)
        state = .receiving(buffer, demanded: demanded)
        return .none
    }

    mutating func ended() -> Action {
        guard case .receiving(let buffer, let demanded) = state else { return .none }
        if demanded {
            state = .delivered
            return .deliver(buffer)
        }
        state = .complete(buffer)
        return .none
    }

    /// The pipeline asks for the body.
    mutating func demanded() -> Action {
        switch state {
        case .receiving(let buffer, demanded: false):
            state = .receiving(buffer, demanded: true)
            return .read
        case .complete(let buffer):
            state = .delivered
            return .deliver(buffer)
        case .failed(let error):
            state = .delivered
            return .fail(error)
        case .receiving(_, demanded: true), .discarding, .delivered:
            // Asked twice, or for a request with no body to give: a bug above, not the client's.
            return .fail(.invalidRequest("the request body could not be read"))
        }
    }

    /// The connection closed (or timed out) before the body was whole.
    mutating func connectionClosed() -> Action {
        guard case .receiving(_, let demanded) = state else { return .none }
        return fail(.invalidRequest("the request body could not be read"), demanded: demanded)
    }

    private mutating func fail(_ error: OpenAIError, demanded: Bool) -> Action {
        if demanded {
            state = .delivered
            return .fail(error)
        }
        state = .failed(error)
        return .none
    }
}
