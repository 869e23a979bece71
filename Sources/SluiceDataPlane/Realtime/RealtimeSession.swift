import Foundation
import Logging
import NIOCore
import NIOWebSocket
import SluiceBilling
import SluiceLimiter
import SluiceTenancy
import SluiceUpstream
import Synchronization

/// One Realtime session: the client's WebSocket joined to the backend's, message by message in
/// both directions (each side read only as fast as the other takes it).
///
/// Billing and limits: the session holds its concurrency slot until it ends, the lease renewed
/// meanwhile. Each `response.done` the backend sends is one metered request of its own
/// (`<session id>.<n>`): admitted for exactly its usage against the request, token and budget
/// limits (not the concurrency limit: the session holds that), then settled into the ledger. A
/// response the limits refuse was still generated, so it is billed (straight to the ledger), and
/// the client gets an `error` event in OpenAI's shape before the session closes.
public final class RealtimeSession: Sendable {
    public typealias Socket = RealtimeBackendConnection.Socket

    private let pipeline: InferencePipeline
    private let key: ResolvedKey
    private let admission: Admission
    private let settler: Settler
    private let price: ModelPrice?
    private let backend: Backend
    private let backendSocket: Socket
    /// Keeps the session's concurrency slot and billing deadline while it runs.
    private let renewal: RepeatedTask?
    private let state: Mutex<State>

    private struct State {
        var record: AccessRecord
        var responses = 0
        var lastActivity = ContinuousClock.now
        var ended = false
        /// Why the gateway ended the session, told to the client before the close.
        var closing: OpenAIError?
    }

    init(pipeline: InferencePipeline, key: ResolvedKey, admission: Admission, settler: Settler, price: ModelPrice?,
         backend: Backend, socket: Socket, record: AccessRecord) {
        self.pipeline = pipeline
        self.key = key
        self.admission = admission
        self.settler = settler
        self.price = price
        self.backend = backend
        self.backendSocket = socket
        self.renewal = settler.keepLeaseAlive(on: socket.channel.eventLoop)
        self.state = Mutex(State(record: record))
    }

    /// Relays until either side closes, the session idles or runs out its time, or a limit is
    /// hit; then closes both sockets, frees the slot and logs the session.
    public func run(client: Socket) async {
        let settings = pipeline.settings.realtime
        do {
            try await client.executeThenClose { clientIn, clientOut in
                try await backendSocket.executeThenClose { backendIn, backendOut in
                    await withTaskGroup(of: Void.self) { group in
                        group.addTask { await self.clientToBackend(clientIn, backendOut, clientOut) }
                        group.addTask { await self.backendToClient(backendIn, clientOut, backendOut) }
                        group.addTask { await self.watchClock(settings) }
                        await group.next()
                        group.cancelAll()
                    }
                    if let reason = state.withLock({ $0.closing }) {
                        try? await clientOut.write(WebSocketFrame(fin: true, opcode: .text, data: RealtimeEvent.error(reason)))
                    }
                    try? await clientOut.write(Self.closeFrame(code: .normalClosure, masked: false))
                    try? await backendOut.write(Self.closeFrame(code: .normalClosure, masked: true))
                }
            }
        } catch {
            // A socket that failed closes all the same; the session ends below.
        }
        await end()
    }

    /// The client went before the session could start (the upgrade failed): end it unrun.
    public func abandon() async {
        backendSocket.channel.close(promise: nil)
        await end()
    }

    private func clientToBackend(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
                                 _ backend: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
                                 _ client: NIOAsyncChannelOutboundWriter<WebSocketFrame>) async {
        // Nothing the client sends is read for billing.
        await relay(inbound, to: backend, pongsTo: client, towardBackend: true) { _ in false }
    }

    private func backendToClient(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
                                 _ client: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
                                 _ backend: NIOAsyncChannelOutboundWriter<WebSocketFrame>) async {
        await relay(inbound, to: client, pongsTo: backend, towardBackend: false) { text in
            guard let usage = RealtimeEvent.responseUsage(text), let refusal = await self.charge(usage) else { return false }
            self.state.withLock { $0.closing = refusal }
            return true
        }
    }

    /// Passes whole messages from `inbound` to `outbound` until a close (or an error) and
    /// answers pings itself. Frames toward the backend are masked (the gateway is its client),
    /// toward the client not. `stop` sees each text message once it is passed on, and ends the
    /// relay by returning true.
    private func relay(_ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
                       to outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
                       pongsTo back: NIOAsyncChannelOutboundWriter<WebSocketFrame>, towardBackend: Bool,
                       stop: (ByteBuffer) async -> Bool) async {
        do {
            for try await frame in inbound {
                switch frame.opcode {
                case .text, .binary:
                    touch()
                    let data = frame.unmaskedData
                    // A fresh mask per frame, as the protocol asks of a client.
                    try await outbound.write(WebSocketFrame(fin: true, opcode: frame.opcode, maskKey: towardBackend ? .random() : nil,
                                                            data: data))
                    if frame.opcode == .text, await stop(data) { return }
                case .ping:
                    try await back.write(WebSocketFrame(fin: true, opcode: .pong, maskKey: towardBackend ? nil : .random(),
                                                        data: frame.unmaskedData))
                case .connectionClose:
                    return
                default:
                    continue
                }
            }
        } catch {
            return
        }
    }

    /// Returns (ending the session) once it has idled or lasted too long.
    private func watchClock(_ settings: RealtimeSettings) async {
        let started = ContinuousClock.now
        while !Task.isCancelled {
            let last = state.withLock { $0.lastActivity }
            let now = ContinuousClock.now
            if now - started >= settings.maxSession {
                state.withLock { $0.closing = OpenAIError(status: 400, type: "invalid_request_error", code: "session_expired",
                                                          message: "the session reached its maximum length of \(settings.maxSession)") }
                return
            }
            if now - last >= settings.idleTimeout {
                state.withLock { $0.closing = OpenAIError(status: 400, type: "invalid_request_error", code: "session_idle_timeout",
                                                          message: "the session was idle for \(settings.idleTimeout)") }
                return
            }
            let next = min(last + settings.idleTimeout, started + settings.maxSession)
            try? await Task.sleep(until: next, clock: .continuous)
        }
    }

    private func touch() {
        state.withLock { $0.lastActivity = .now }
    }

    /// Meters one response; the refusal when the limits say no (the response is billed anyway).
    private func charge(_ usage: BilledUsage) async -> OpenAIError? {
        let number = state.withLock { state in
            state.responses += 1
            state.record.bill(BilledUsage(prompt: state.record.promptTokens + usage.prompt,
                                          completion: state.record.completionTokens + usage.completion,
                                          source: usage.source, clamped: usage.clamped))
            return state.responses
        }
        let model = admission.model
        let request = AdmitRequest(
            requestID: "\(admission.requestID).\(number)", tenantID: key.tenantID, keyID: key.keyID, model: model,
            tokensToReserve: usage.prompt + usage.completion, promptEstimate: usage.prompt,
            reservedCostMicroUSD: price?.cost(prompt: usage.prompt, cachedPrompt: usage.cachedPrompt, completion: usage.completion) ?? 0,
            priceID: price?.id, tenantLimits: key.tenantLimits.withoutConcurrency, keyLimits: key.keyLimits.withoutConcurrency,
            modelLimits: (key.modelLimits[model] ?? .none).withoutConcurrency)
        var scratch = AccessRecord(requestID: request.requestID, clientRequestID: settler.clientRequestID, endpoint: "realtime")
        do {
            let charged = try await pipeline.decide(request, &scratch)
            await responseSettler(charged, promptEstimate: usage.prompt).settle(usage, status: 200)
            return nil
        } catch {
            // Generated all the same: billed at its price, straight to the ledger.
            settler.record(usage, requestID: request.requestID)
            return error as? OpenAIError ?? .limiterUnavailable
        }
    }

    private func responseSettler(_ charged: Admission, promptEstimate: Int) -> Settler {
        Settler(limiter: pipeline.limiter, admission: charged, price: price, promptEstimate: promptEstimate,
                clientRequestID: settler.clientRequestID, fallback: settler.fallback, logger: settler.logger)
    }

    /// Once: frees the slot and the backend, and logs the session (its responses' tokens summed).
    private func end() async {
        guard let record = state.withLock({ state -> AccessRecord? in
            guard !state.ended else { return nil }
            state.ended = true
            if let closing = state.closing { state.record.errorCode = closing.code }
            return state.record
        }) else { return }
        renewal?.cancel()
        backend.releaseSlot()
        // The session's own row books nothing: its responses carry the usage.
        await settler.settle(.nothing, status: 101)
        pipeline.emit(record)
    }

    private static func closeFrame(code: WebSocketErrorCode, masked: Bool) -> WebSocketFrame {
        var data = ByteBuffer()
        data.write(webSocketErrorCode: code)
        return WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: masked ? .random() : nil, data: data)
    }
}

extension Limits {
    /// The same limits without the concurrency one (a Realtime response runs inside its session's slot).
    var withoutConcurrency: Limits {
        var limits = self
        limits.maxConcurrentRequests = nil
        return limits
    }
}
