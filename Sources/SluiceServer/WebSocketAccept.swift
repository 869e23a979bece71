import Crypto
import Foundation

/// `Sec-WebSocket-Accept` for a handshake's key (RFC 6455 §4.2.2): base64 of the SHA-1 of the
/// key and the protocol's fixed GUID.
enum WebSocketAccept {
    static func value(for key: String) -> String {
        Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
    }
}
