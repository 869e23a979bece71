import NIOCore
import NIOHTTP1
import NIOWebSocket
import SluiceConcurrency
import SluiceDataPlane

/// The public listener's request handler: the thin adapter between HTTP/1.1 parts and
/// `InferencePipeline`. It decides what it can from the head (route, declared size), starts the
/// pipeline in a task that runs on this connection's event loop (so the Redis and upstream
/// connections it uses are that loop's, and nothing hops threads), hands it a body reader that
/// reads only when asked, and writes the answer, streaming it chunk by chunk under back-pressure.
///
/// One request at a time: `HTTPServerPipelineHandler` in front holds pipelined requests until
/// the previous response has ended.
final class PublicRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let pipeline: InferencePipeline
    private let maxRequestBytes: Int
    private var body: RequestBodyStateMachine
    private var bodyWaiter: EventLoopPromise<ByteBuffer>?
    /// The request in hand; nil once it can no longer be answered (the connection failed or
    /// closed, or `HTTPServerProtocolErrorHandler` answered a malformed request itself).
    private var head: PublicRequestHead?
    private var requestEnded = true
    private var readHeld = false
    private var context: ChannelHandlerContext?
    private var executor: EventLoopTaskExecutor?
    /// The connection's peer, read once: every request on it comes from the same place.
    private var peer: SocketAddress?

    init(pipeline: InferencePipeline, maxRequestBytes: Int) {
        self.pipeline = pipeline
        self.maxRequestBytes = maxRequestBytes
        self.body = RequestBodyStateMachine(limit: maxRequestBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.executor = EventLoopTaskExecutor.on(context.eventLoop)
        self.peer = context.channel.remoteAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        connectionEnded()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        connectionEnded()
        context.fireChannelInactive()
    }

    /// A malformed request (or a client that broke off mid-request): the error handler in front
    /// answers 400 and closes; this request gets no second answer.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connectionEnded()
        context.fireErrorCaught(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            start(PublicRequestHead(head, forwardingHeader: pipeline.forwardingHeader), context: context)
        case .body(var bytes):
            carryOut(body.received(&bytes))
        case .end:
            requestEnded = true
            carryOut(body.ended())
        }
    }

    /// While a body waits for the pipeline's decision, nothing more is read from the socket.
    func read(context: ChannelHandlerContext) {
        if body.holdsReads {
            readHeld = true
            return
        }
        context.read()
    }

    private func start(_ head: PublicRequestHead, context: ChannelHandlerContext) {
        self.head = head
        requestEnded = false
        let requestID = RequestID.make()
        let origin = ClientOrigin(peer: peer, forwardedFor: head.forwardedFor)
        switch head.route {
        case .unknown:
            body.discardBody()
            // One "unknown" label, not the path: metrics labels must stay bounded.
            respond(pipeline.reject(.unknownEndpoint(method: head.method, path: String(head.path)), requestID: requestID,
                                    clientRequestID: head.clientRequestID, endpoint: "unknown"))
        case .realtime:
            body.discardBody()
            guard let handshake = head.webSocket else {
                respond(pipeline.reject(.invalidRequest("/v1/realtime is a WebSocket endpoint: send a WebSocket upgrade (version 13)"),
                                        requestID: requestID, clientRequestID: head.clientRequestID, endpoint: "/v1/realtime"))
                return
            }
            let call = RealtimeCall(authorization: head.authorization, subprotocols: handshake.subprotocols, model: handshake.model,
                                    passHeaders: handshake.openAIBeta.map { [("openai-beta", $0)] } ?? [],
                                    requestID: requestID, clientRequestID: head.clientRequestID,
                                    eventLoop: context.eventLoop, origin: origin)
            runRealtime(call, handshakeKey: handshake.key)
        case .listModels:
            body.discardBody()
            run { pipeline in
                await pipeline.listModels(authorization: head.authorization, requestID: requestID,
                                          clientRequestID: head.clientRequestID, origin: origin)
            }
        case .inference(let endpoint):
            // Refused from the headers: nothing of the body is read, and the connection closes.
            if let declared = head.declaredLength, declared > maxRequestBytes {
                body.discardBody()
                respond(pipeline.reject(.tooLarge(maxRequestBytes), requestID: requestID,
                                        clientRequestID: head.clientRequestID, endpoint: endpoint.rawValue))
                return
            }
            body.expectBody()
            let call = InferenceCall(endpoint: endpoint, authorization: head.authorization, requestID: requestID,
                                     clientRequestID: head.clientRequestID, traceparent: head.traceparent,
                                     eventLoop: context.eventLoop, origin: origin)
            let readBody = bodyReader(context.eventLoop)
            run { pipeline in await pipeline.handle(call, readBody: readBody) }
        }
    }

    /// Runs the pipeline on this loop's executor, then answers.
    private func run(_ produce: @escaping @Sendable (InferencePipeline) async -> InferenceResult) {
        spawn { pipeline, handler, channel in await Self.answer(produce(pipeline), handler: handler, channel: channel) }
    }

    /// Starts `work` for the request in hand, in a task on this connection's loop, counted in flight.
    private func spawn(_ work: @escaping @Sendable (InferencePipeline, NIOLoopBound<PublicRequestHandler>, any Channel) async -> Void) {
        guard let context, let executor else { return }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let pipeline = pipeline
        let channel = context.channel
        pipeline.metrics.requestStarted()
        Task(executorPreference: executor) { @Sendable in
            await work(pipeline, handler, channel)
            pipeline.metrics.requestEnded()
        }
    }

    /// Opens a Realtime session in a task on this loop; upgrades the connection when the session
    /// is accepted (it then runs on the connection), answers over HTTP when refused.
    private func runRealtime(_ call: RealtimeCall, handshakeKey: String) {
        spawn { pipeline, handler, channel in
            switch await pipeline.openRealtime(call) {
            case .rejected(let result):
                await Self.answer(result, handler: handler, channel: channel)
            case .accepted(let session, let subprotocol):
                let socket = await onLoop(channel.eventLoop, unavailable: nil) {
                    handler.value.upgradeToWebSocket(key: handshakeKey, subprotocol: subprotocol,
                                                     maxMessageBytes: pipeline.realtimeSettings.maxMessageBytes)
                }
                if let socket { await session.run(client: socket) } else { await session.abandon() }
            }
        }
    }

    /// Answers the handshake with 101 and turns this connection into a WebSocket: the HTTP
    /// codec and this handler leave the pipeline, the connection guard stays (still counting the
    /// connection under the cap, its HTTP timeouts off), and frames come whole. Nil when the
    /// connection is already gone.
    private func upgradeToWebSocket(key: String, subprotocol: String?, maxMessageBytes: Int) -> RealtimeSession.Socket? {
        guard let context, head != nil, context.channel.isActive else { return nil }
        head = nil  // answered
        do {
            let sync = context.pipeline.syncOperations
            // No more HTTP parsing first: what follows the 101 is frames.
            try sync.removeHandler(context: sync.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self))
            try sync.removeHandler(context: sync.context(handlerType: HTTPServerPipelineHandler.self))
            try sync.removeHandler(context: sync.context(handlerType: HTTPServerProtocolErrorHandler.self))
            try sync.removeHandler(context: sync.context(handlerType: NIOHTTPResponseHeadersValidator.self))
            var headers = HTTPHeaders([("upgrade", "websocket"), ("connection", "upgrade"),
                                       ("sec-websocket-accept", WebSocketAccept.value(for: key))])
            if let subprotocol { headers.add(name: "sec-websocket-protocol", value: subprotocol) }
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols,
                                                                         headers: headers))), promise: nil)
            try sync.removeHandler(context: sync.context(handlerType: HTTPResponseEncoder.self))
            try sync.handler(type: ConnectionGuardHandler.self).upgraded()
            try sync.addHandler(WebSocketFrameEncoder())
            try sync.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxMessageBytes)))
            try sync.addHandler(WebSocketProtocolErrorHandler())
            try sync.addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 4096,
                                                            maxAccumulatedFrameSize: maxMessageBytes))
            let socket = try RealtimeSession.Socket(wrappingChannelSynchronously: context.channel)
            try sync.removeHandler(context: context)
            return socket
        } catch {
            context.close(promise: nil)
            return nil
        }
    }

    private static func answer(_ result: InferenceResult, handler: NIOLoopBound<PublicRequestHandler>,
                               channel: any Channel) async {
        let fallback: StreamFollowUp = if case .stream(_, let stream) = result { .cancel(stream) } else { .none }
        let stream = await onLoop(channel.eventLoop, unavailable: fallback) { handler.value.respond(result) }
        switch stream {
        case .none: break
        case .pump(let stream): await pump(stream, to: channel)
        case .cancel(let stream): await stream.cancel()
        }
    }

    private func bodyReader(_ eventLoop: any EventLoop) -> InferenceBodyReader {
        let handler = NIOLoopBound(self, eventLoop: eventLoop)
        return { () async throws(OpenAIError) -> ByteBuffer in
            let body = await onLoop(eventLoop, unavailable: eventLoop.makeFailedFuture(OpenAIError.invalidRequest(
                "the request body could not be read"))) { handler.value.demandBody(on: eventLoop) }
            do {
                return try await body.get()
            } catch let error as OpenAIError {
                throw error
            } catch {
                throw .invalidRequest("the request body could not be read")
            }
        }
    }

    private func demandBody(on eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let waiter = eventLoop.makePromise(of: ByteBuffer.self)
        bodyWaiter = waiter
        if let head, head.expectsContinue, body.holdsReads {
            // The client waits for this before it sends the body.
            context?.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))),
                                   promise: nil)
        }
        carryOut(body.demanded())
        return waiter.futureResult
    }

    private func carryOut(_ action: RequestBodyStateMachine.Action) {
        switch action {
        case .none:
            break
        case .read:
            if readHeld {
                readHeld = false
                context?.read()
            }
        case .deliver(let buffer):
            bodyWaiter?.succeed(buffer)
            bodyWaiter = nil
        case .fail(let error):
            bodyWaiter?.fail(error)
            bodyWaiter = nil
        }
    }

    private func connectionEnded() {
        head = nil
        carryOut(body.connectionClosed())
        bodyWaiter?.fail(OpenAIError.invalidRequest("the request body could not be read"))
        bodyWaiter = nil
    }

    /// Writes the head (and for a whole answer, the body and end); a stream is returned for
    /// the caller to pump. An answer given before a declared body was read whole closes the
    /// connection rather than drain the rest.
    @discardableResult
    private func respond(_ result: InferenceResult) -> StreamFollowUp {
        guard let context, let head else {
            // Nobody to answer: a stream is cancelled, and settles what was delivered (nothing).
            if case .stream(_, let stream) = result { return .cancel(stream) }
            return .none
        }
        let close = (!requestEnded && head.declaresBody) || !head.keepAlive
        switch result {
        case .complete(let status, let headers, let payload):
            let response = Self.responseHead(head, status: status, headers: headers, length: payload.readableBytes, close: close)
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(payload))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            return .none
        case .stream(let headers, let stream):
            // HTTP/1.0 has no chunked encoding: the end of the stream is the end of the connection.
            let response = Self.responseHead(head, status: 200, headers: headers, length: nil,
                                             close: close || head.version.minor == 0)
            // The head goes at once, unless the first bytes came with the backend's head: then
            // it goes with them, in one write.
            if stream.hasMoreReady {
                context.write(wrapOutboundOut(.head(response)), promise: nil)
            } else {
                context.writeAndFlush(wrapOutboundOut(.head(response)), promise: nil)
            }
            return .pump(stream)
        }
    }

    enum StreamFollowUp: Sendable {
        case none
        case pump(InferenceStream)
        case cancel(InferenceStream)
    }

    static func responseHead(_ request: PublicRequestHead, status: Int, headers: [(String, String)], length: Int?,
                             close: Bool) -> HTTPResponseHead {
        var fields = HTTPHeaders()
        fields.reserveCapacity(headers.count + 2)
        for (name, value) in headers { fields.add(name: name, value: value) }
        if let length { fields.add(name: "content-length", value: String(length)) }
        if close {
            fields.add(name: "connection", value: "close")
        } else if request.version.minor == 0 {
            fields.add(name: "connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: request.version, status: HTTPResponseStatus(statusCode: status), headers: fields)
    }

    /// Streams the answer: each chunk is flushed at once (tokens should not wait), unless what
    /// follows it is here already (read from the backend with it, as a short answer's end is):
    /// then they are flushed together, one write for what arrived together. While the socket
    /// takes what is written, the next chunk is pulled at once; once the client reads slower
    /// than the backend writes (the channel is no longer writable), the pump waits for the
    /// write, so a slow client slows the backend read. A write that fails means the client went
    /// away: the stream is cancelled and settles what was delivered.
    static func pump(_ stream: InferenceStream, to channel: any Channel) async {
        while let chunk = await stream.next() {
            let part = HTTPServerResponsePart.body(.byteBuffer(chunk))
            if channel.isActive, channel.isWritable {
                if stream.hasMoreReady {
                    channel.write(part, promise: nil)
                } else {
                    channel.writeAndFlush(part, promise: nil)
                }
                continue
            }
            do {
                try await channel.writeAndFlush(part)
            } catch {
                await stream.cancel()
                return
            }
        }
        try? await channel.writeAndFlush(HTTPServerResponsePart.end(nil))
    }
}
