import NIOCore
import SluiceLimiter
import SluiceUpstream
import Synchronization

/// A streamed answer on its way to the client. The listener pulls chunks with `next()` (so a
/// slow client slows the read from the backend: back-pressure end to end) and calls `cancel()`
/// if the client goes away. Either way the request settles exactly once, with the usage the
/// backend reported or, for a cut stream, the chunks delivered so far.
public final class InferenceStream: @unchecked Sendable {
    // @unchecked: one listener task drives a stream; `done` guards the end against a racing cancel.
    private let response: UpstreamResponse
    private let backend: Backend
    private let settler: Settler
    private var filter: ServerSentEventsFilter
    private var record: AccessRecord
    private let pipeline: InferencePipeline
    private let done = Mutex(false)
    /// Renews the concurrency leases and the billing deadline while the stream runs.
    private let renewal: RepeatedTask?

    init(response: UpstreamResponse, backend: Backend, settler: Settler, filter: ServerSentEventsFilter,
         record: AccessRecord, pipeline: InferencePipeline) {
        self.response = response
        self.backend = backend
        self.settler = settler
        self.filter = filter
        self.record = record
        self.pipeline = pipeline
        renewal = settler.keepLeaseAlive(on: response.eventLoop)
    }

    /// The next bytes for the client; nil when the stream is over (and settled).
    public func next() async -> ByteBuffer? {
        while true {
            let chunk: ByteBuffer?
            do {
                chunk = try await response.nextChunk()
            } catch {
                // The backend died or stalled mid-stream: tell the client in-band, then end.
                record.errorCode = error == .timeout(.idle) || error == .timeout(.total) ? "upstream_timeout" : "upstream_error"
                await end(status: 502)
                let failure = OpenAIError.upstream(502, record.errorCode, "the model server's stream broke off")
                var event = ByteBuffer(string: "data: ")
                var body = failure.body
                event.writeBuffer(&body)
                event.writeString("\n\n")
                return event
            }
            guard let chunk else {
                let rest = filter.flush()
                await end(status: 200)
                return rest.readableBytes > 0 ? rest : nil
            }
            let output = filter.feed(chunk)
            if output.readableBytes > 0 {
                if record.firstByte == nil { record.firstByte = .now }
                return output
            }
        }
    }

    /// Whether the backend's next bytes (or its end) are here already, so `next()` will not wait
    /// for the model: the listener then holds its flush and sends them together. False when
    /// unknown.
    public var hasMoreReady: Bool { response.hasBufferedPart }

    /// The client went away: close the upstream connection (the model stops generating) and
    /// settle with what was delivered.
    public func cancel() async {
        response.abandon()
        record.errorCode = "client_disconnected"
        await end(status: 499)
    }

    /// Settles after the answer, as whole answers do, unless the request holds concurrency
    /// slots: a client that waits for each stream's end before starting the next must never
    /// find its own slot still taken.
    private func end(status: Int) async {
        guard let (usage, record) = close(status: status) else { return }
        if settler.admission.holdsConcurrencySlots {
            await settler.settle(usage, status: status)
        } else {
            settler.settleInBackground(usage, status: status)
        }
        pipeline.emit(record)
    }

    /// The stream was dropped unended: the listener never ran its body (for instance the
    /// client was gone before the head was written). Nobody else can settle it now, so this
    /// does, with what was delivered: "settled exactly once" does not depend on the listener.
    deinit {
        guard let (usage, record) = close(status: 499, errorCode: "client_disconnected") else { return }
        settler.settleInBackground(usage, status: 499)
        pipeline.emit(record)
    }

    /// The synchronous half of ending, once only: stops renewing, frees the backend slot and
    /// says what to bill.
    private func close(status: Int, errorCode: String? = nil) -> (BilledUsage, AccessRecord)? {
        guard done.withLock({ done in
            defer { done = true }
            return !done
        }) else { return nil }
        renewal?.cancel()
        response.abandon()  // no-op after a clean end
        backend.releaseSlot()
        // Without the usage chunk (a cut stream, a backend that never sends one): the prompt
        // estimate plus one token per chunk that delivered text.
        let usage = BilledUsage(reported: filter.usage, promptEstimate: settler.promptEstimate,
                                delivered: filter.contentChunks)
        record.bill(usage)
        if let errorCode { record.errorCode = errorCode }
        if status != 200 { record.status = status }
        return (usage, record)
    }
}
