import Foundation
import NIOCore
import SluiceErrorBody

/// An error in OpenAI's shape, with the status and code interface.md assigns to it.
public struct OpenAIError: Error, Sendable, Equatable {
    public let status: Int
    public let type: String
    public let code: String
    public let message: String
    public let param: String?

    public init(status: Int, type: String, code: String, message: String, param: String? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.param = param
    }

    public static func invalidRequest(_ message: String, param: String? = nil) -> OpenAIError {
        OpenAIError(status: 400, type: "invalid_request_error", code: "invalid_request_error", message: message, param: param)
    }

    public static func invalidKey(_ message: String) -> OpenAIError {
        OpenAIError(status: 401, type: "invalid_request_error", code: "invalid_api_key", message: message)
    }

    public static func modelNotAllowed(_ model: String) -> OpenAIError {
        OpenAIError(status: 403, type: "invalid_request_error", code: "model_not_allowed",
                    message: "this API key may not use the model '\(model)'", param: "model")
    }

    public static func endpointNotAllowed(_ path: String) -> OpenAIError {
        OpenAIError(status: 403, type: "invalid_request_error", code: "endpoint_not_allowed",
                    message: "this API key may not call \(path)")
    }

    /// The message never names the address: a caller behind a proxy learns nothing of the rule.
    public static let sourceNotAllowed = OpenAIError(
        status: 403, type: "invalid_request_error", code: "source_network_not_allowed",
        message: "this API key may not be used from this network")

    public static func outputAboveKeyCap(_ asked: Int, cap: Int, param: String) -> OpenAIError {
        OpenAIError(status: 400, type: "invalid_request_error", code: "max_tokens_above_key_limit",
                    message: "this API key allows at most \(cap) output tokens per request; \(param) asks for \(asked)",
                    param: param)
    }

    public static func modelNotFound(_ model: String) -> OpenAIError {
        OpenAIError(status: 404, type: "invalid_request_error", code: "model_not_found",
                    message: "the model '\(model)' does not exist", param: "model")
    }

    public static func tooLarge(_ limit: Int) -> OpenAIError {
        OpenAIError(status: 413, type: "invalid_request_error", code: "request_too_large",
                    message: "the request body is over the limit of \(limit) bytes")
    }

    public static func rateLimited(_ message: String) -> OpenAIError {
        OpenAIError(status: 429, type: "requests", code: "rate_limit_exceeded", message: message)
    }

    public static func quotaExhausted(_ message: String) -> OpenAIError {
        OpenAIError(status: 429, type: "insufficient_quota", code: "insufficient_quota", message: message)
    }

    public static let limiterUnavailable = OpenAIError(
        status: 503, type: "server_error", code: "limiter_unavailable",
        message: "the rate limiter is unavailable; try again shortly")

    public static func upstream(_ status: Int, _ code: String, _ message: String) -> OpenAIError {
        OpenAIError(status: status, type: "server_error", code: code, message: message)
    }

    /// An unknown path or method on the public listener (the path is cut at 200 characters).
    public static func unknownEndpoint(method: String, path: String) -> OpenAIError {
        OpenAIError(status: 404, type: "invalid_request_error", code: "not_found",
                    message: "no such endpoint: \(method) \(path.prefix(200))")
    }

    /// `{"error": {"message", "type", "param", "code"}}`.
    public var body: ByteBuffer { ErrorBody.render(message: message, type: type, code: code, param: param) }
}
