import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SluiceDataPlane

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

/// The thin HTTP adapter around `InferencePipeline`: it reads the body (bounded), hands the
/// call over, and writes the result, streaming it chunk by chunk.
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
            let requestID = Self.requestID(request)
            return Self.response(await pipeline.listModels(authorization: request.headers[.authorization], requestID: requestID))
        }
        return router
    }

    private func inference(_ endpoint: InferenceEndpoint, _ request: Request, _ context: PublicRequestContext) async throws -> Response {
        let requestID = Self.requestID(request)
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: maxRequestBytes)
        } catch is NIOTooManyBytesError {
            return Self.response(pipeline.reject(.tooLarge(maxRequestBytes), requestID: requestID, endpoint: endpoint.rawValue))
        }
        let call = InferenceCall(endpoint: endpoint, authorization: request.headers[.authorization], body: body,
                                 requestID: requestID, traceparent: Self.traceparent(request), eventLoop: context.eventLoop)
        return Self.response(await pipeline.handle(call))
    }

    static func response(_ result: InferenceResult) -> Response {
        switch result {
        case .complete(let status, let headers, let body):
            return Response(status: .init(code: status), headers: fields(headers), body: .init(byteBuffer: body))
        case .stream(let headers, let stream):
            return Response(status: .ok, headers: fields(headers), body: ResponseBody { writer in
                do {
                    while let chunk = await stream.next() { try await writer.write(chunk) }
                    try await writer.finish(nil)
                } catch {
                    await stream.cancel()  // the client went away
                    throw error
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

    /// The client's `x-request-id` if it is sane (printable, at most 128 bytes), else a new one.
    static func requestID(_ request: Request) -> String {
        if let given = request.headers[values: HTTPField.Name("x-request-id")!].first, (1...128).contains(given.utf8.count),
           given.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) {
            return given
        }
        return UUID().uuidString.lowercased()
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
                                                           requestID: PublicListener.requestID(request), endpoint: "unknown"))
        }
    }
}
