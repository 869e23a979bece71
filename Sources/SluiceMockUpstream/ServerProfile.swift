import Foundation

/// Which model server the mock imitates, with the quirks read from each server's public source:
/// the shape of its error body, where `usage` appears in a stream, and its context-length error.
public enum ServerProfile: String, Sendable, CaseIterable {
    /// OpenAI's own shapes (the mock's default).
    case openai
    /// vLLM (`vllm serve`): `{"error": {"message", "type": "BadRequestError", "param", "code": 400}}`
    /// (an integer code), and `"usage": null` on every chunk of a stream that asked for usage.
    case vllm
    /// TensorRT-LLM (`trtllm-serve`): the older flat `{"object": "error", "message", "type",
    /// "param", "code": 400}`; usage only on the last chunk.
    case trtllm
    /// The NVIDIA Dynamo frontend: flat `{"message", "type": "Bad Request", "code": 400}` (the
    /// HTTP reason as the type, validation messages prefixed "Validation: "); usage on the last chunk.
    case dynamo

    /// The body and status of a refused request, in this server's shape.
    func error(_ message: String, status: Int) -> [String: Any] {
        let reason = status == 404 ? "Not Found" : "Bad Request"
        let vllmType = status == 404 ? "NotFoundError" : "BadRequestError"
        switch self {
        case .openai:
            return ["error": ["message": message, "type": "invalid_request_error", "param": NSNull(),
                              "code": message.contains("context length") ? "context_length_exceeded" : NSNull()]]
        case .vllm:
            return ["error": ["message": message, "type": vllmType, "param": NSNull(), "code": status]]
        case .trtllm:
            return ["object": "error", "message": message, "type": vllmType, "param": NSNull(), "code": status]
        case .dynamo:
            return ["message": message, "type": reason, "code": status]
        }
    }

    /// The refusal of a prompt and completion longer than the model's context.
    func contextLengthError(limit: Int, prompt: Int, completion: Int) -> [String: Any] {
        switch self {
        case .dynamo:
            return error("Validation: prompt (\(prompt) tokens) plus max_tokens (\(completion)) exceeds the model's context length of \(limit)",
                         status: 400)
        case .openai, .vllm, .trtllm:
            return error("This model's maximum context length is \(limit) tokens. However, you requested \(prompt + completion) tokens "
                         + "(\(prompt) in the messages, \(completion) in the completion). Please reduce the length of the messages or completion.",
                         status: 400)
        }
    }

    /// Whether chunks before the usage chunk carry `"usage": null` when usage was asked for.
    var nullUsageOnEveryChunk: Bool { self == .vllm }
}
