import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SluiceDataPlane
import Synchronization

/// The public listener's request context: carries the connection's event loop, so upstream
/// connections come from that loop's pool.
public struct PublicRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let eventLoop: any EventLoop

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.eventLoop = source.channel.eventLoop
    }
}

/// The thin HTTP adapter around `InferencePipeline`: it decides what it can from the headers
/// (declared size), hands the call over with a bounded body reader, and writes the result,
/// streaming it chunk by chunk.
struct PublicListener {
    let pipeline: InferencePipeline
    let maxRequestBytes: Int

    func router() -> Router<PublicRequestContext> {
        let router = Router(context: PublicRequestContext.self)
        router.add(middleware: OpenAIShapedRoutingErrors(pipeline: pipeline))
        for endpoint in InferenceEndpoint.allCases {
            router.post(RouterPath(endpoint.rawValue)) { request, context in
                try await inference(endpoint, request, context)
            }
        }
        router.get("/v1/models") { request, _ in
            Self.response(await pipeline.listModels(authorization: request.headers[.authorization], requestID: Self.newRequestID(),
                                                    clientRequestID: Self.clientRequestID(request)))
        }
        return router
    }

    private func inference(_ endpoint: InferenceEndpoint, _ request: Request, _ context: PublicRequestContext) async throws -> Response {
        let requestID = Self.newRequestID()
        let clientRequestID = Self.clientRequestID(request)
        // Refused from the headers: nothing of the body is read, and the connection closes.
        if let declared = request.headers[.contentLength].flatMap({ Int($0) }), declared > maxRequestBytes {
            return Self.response(pipeline.reject(.tooLarge(maxRequestBytes), requestID: requestID,
                                                 clientRequestID: clientRequestID, endpoint: endpoint.rawValue), close: true)
        }
        let call = InferenceCall(endpoint: endpoint, authorization: request.headers[.authorization], requestID: requestID,
                                 clientRequestID: clientRequestID, traceparent: Self.traceparent(request),
                                 eventLoop: context.eventLoop)
        let bodyRead = Atomic<Bool>(false)
        let limit = maxRequestBytes
        let result = await withTaskExecutorPreference(EventLoopTaskExecutor.on(context.eventLoop)) {
            await pipeline.handle(call) { () async throws(OpenAIError) -> ByteBuffer in
                do {
                    let body = try await request.body.collect(upTo: limit)
                    bodyRead.store(true, ordering: .relaxed)
                    return body
                } catch is NIOTooManyBytesError {
                    throw .tooLarge(limit)
                } catch {
                    throw .invalidRequest("the request body could not be read")
                }
            }
        }
        // An answer given before the body was read whole: close rather than drain the rest.
        return Self.response(result, close: !bodyRead.load(ordering: .relaxed) && Self.declaresBody(request),
                             eventLoop: context.eventLoop)
    }

    static func response(_ result: InferenceResult, close: Bool = false, eventLoop: (any EventLoop)? = nil) -> Response {
        switch result {
        case .complete(let status, let headers, let body):
            var fields = fields(headers)
            if close { fields[.connection] = "close" }
            return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: body))
        case .stream(let headers, let stream):
            return Response(status: .ok, headers: fields(headers), body: ResponseBody { writer in
                try await withTaskExecutorPreference(eventLoop.map(EventLoopTaskExecutor.on)) {
                    do {
                        while let chunk = await stream.next() { try await writer.write(chunk) }
                        try await writer.finish(nil)
                    } catch {
                        await stream.cancel()  // the client went away
                        throw error
                    }
                }
            })
        }
    }

    private static func fields(_ headers: [(String, String)]) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in headers {
            if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
        }
        return fields
    }

    static func declaresBody(_ request: Request) -> Bool {
        request.headers[.contentLength].map { $0 != "0" } ?? (request.headers[.transferEncoding] != nil)
    }

    /// The server's id for a request: unique, and the only one limits and bills use.
    static func newRequestID() -> String { RequestID.make() }

    /// The client's `x-request-id`, for correlation only: visible ASCII, at most 128 bytes
    /// (longer ones are cut), anything else dropped; nil when nothing usable is left.
    static func clientRequestID(_ request: Request) -> String? {
        guard let given = request.headers[values: HTTPField.Name("x-request-id")!].first else { return nil }
        let kept = given.utf8.lazy.filter { (0x21...0x7E).contains($0) }.prefix(128)
        return kept.isEmpty ? nil : String(decoding: Array(kept), as: UTF8.self)
    }

    /// W3C `traceparent`, forwarded when well-formed (version-traceid-parentid-flags).
    static func traceparent(_ request: Request) -> String? {
        guard let value = request.headers[values: HTTPField.Name("traceparent")!].first else { return nil }
        let parts = value.split(separator: "-")
        guard parts.count == 4, parts[0].count == 2, parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
              value.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || $0 == 0x2D }) else {
            return nil
        }
        return value
    }
}

/// Unknown paths and methods get OpenAI's error shape, an `x-request-id` and an access-log line,
/// like every other answer of the public listener, instead of the router's bare status.
struct OpenAIShapedRoutingErrors: RouterMiddleware {
    let pipeline: InferencePipeline

    func handle(_ request: Request, context: PublicRequestContext,
                next: (Request, PublicRequestContext) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // One "unknown" label, not the path: metrics labels must stay bounded.
            return PublicListener.response(pipeline.reject(.unknownEndpoint(method: request.method.rawValue, path: request.uri.path),
                                                           requestID: PublicListener.newRequestID(),
                                                           clientRequestID: PublicListener.clientRequestID(request),
                                                           endpoint: "unknown"),
                                           close: PublicListener.declaresBody(request))
        }
    }
}
