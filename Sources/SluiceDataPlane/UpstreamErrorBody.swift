import Foundation
import NIOCore

/// A backend's refusal (a 4xx other than 401/403) in OpenAI's error shape. Model servers each
/// have their own: vLLM nests `error` but with an integer `code`, TensorRT-LLM and Dynamo are
/// flat, Dynamo's `type` is the HTTP reason. Clients written against OpenAI read `error.code`
/// as a string and branch on it, so the shape is normalised and the one code they act on,
/// `context_length_exceeded`, is recognised from the message.
enum UpstreamErrorBody {
    static func openAIError(status: Int, body: ByteBuffer) -> OpenAIError {
        let object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
        let fields: [String: Any] = object["error"] as? [String: Any] ?? object
        let given = fields["message"] as? String ?? (object["error"] as? String) ?? ""
        // The backend is trusted with the message, not with its size or control characters.
        let message = String(String(given.unicodeScalars.filter { $0.value >= 0x20 || $0 == "\n" }).prefix(1_000))
        let code: String
        if message.localizedCaseInsensitiveContains("context length") || message.localizedCaseInsensitiveContains("context window") {
            code = "context_length_exceeded"
        } else if let text = fields["code"] as? String, !text.isEmpty, text.utf8.count <= 64,
                  text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) {
            code = text
        } else {
            code = status == 404 ? "model_not_found" : "invalid_request_error"
        }
        let param = (fields["param"] as? String).map { String($0.prefix(100)) }
        return OpenAIError(status: status, type: "invalid_request_error", code: code,
                           message: message.isEmpty ? "the model server refused the request (HTTP \(status))" : message,
                           param: param)
    }
}
