import Foundation
import NIOCore

/// The one error body both APIs answer with, OpenAI's shape:
/// `{"error": {"message", "type", "param", "code"}}`, `param` null when absent.
public enum ErrorBody {
    public static func render(message: String, type: String, code: String, param: String?) -> ByteBuffer {
        let detail: [String: Any] = ["message": message, "type": type, "code": code, "param": param ?? NSNull()]
        // Strings and null only: serialisation cannot fail.
        let data = (try? JSONSerialization.data(withJSONObject: ["error": detail], options: [.sortedKeys])) ?? Data()
        return ByteBuffer(bytes: data)
    }
}
