/// Redis Cluster's key → slot function: CRC16 (XMODEM) of the key, or of its hash tag (the
/// text between the first `{` and the next `}`, when not empty), modulo 16384.
public enum RedisHashSlot {
    public static let count = 16_384

    public static func of(_ key: String) -> UInt16 {
        var key = key
        return key.withUTF8 { of(bytes: $0) }
    }

    static func of(bytes key: UnsafeBufferPointer<UInt8>) -> UInt16 {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            hashed = key[(open + 1)..<close]
        }
        return crc16(hashed) & UInt16(count - 1)
    }

    /// CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection.
    static func crc16(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}
