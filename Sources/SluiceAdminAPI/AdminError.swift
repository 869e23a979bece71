import Foundation
import Hummingbird
import SluiceErrorBody

/// Admin API errors, in the same shape as the inference API's:
/// `{"error": {"message", "type", "param", "code"}}`.
public struct AdminError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let message: String
    public let code: String
    public let param: String?

    public init(_ status: HTTPResponse.Status, code: String, message: String, param: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.param = param
    }

    static let unauthorized = AdminError(.unauthorized, code: "invalid_token",
                                         message: "missing, malformed, expired or badly signed admin token")
    static let forbidden = AdminError(.forbidden, code: "forbidden", message: "your role may not do this")
    static let notFound = AdminError(.notFound, code: "not_found", message: "no such resource")

    static func invalid(_ param: String, _ message: String) -> AdminError {
        AdminError(.badRequest, code: "invalid_request_error", message: message, param: param)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let type = status == .badRequest ? "invalid_request_error" : code
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ErrorBody.render(message: message, type: type, code: code, param: param)))
    }
}
