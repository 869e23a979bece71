/// The server's request ids: random version-4 UUIDs in lowercase text. Made from two 64-bit
/// values of the system generator (one `getrandom` each): Foundation's `UUID()` opened
/// /dev/urandom on every call here, a measurable cost per request.
public enum RequestID {
    private static let hex = Array("0123456789abcdef".utf8)

    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = (generator.next() as UInt64) & 0xFFFF_FFFF_FFFF_0FFF | 0x0000_0000_0000_4000  // version 4
        let low = (generator.next() as UInt64) & 0x3FFF_FFFF_FFFF_FFFF | 0x8000_0000_0000_0000  // RFC 4122 variant
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var index = 0
            func put(_ value: UInt64, nibbles: Int) {
                for shift in stride(from: (nibbles - 1) * 4, through: 0, by: -4) {
                    buffer[index] = hex[Int((value >> UInt64(shift)) & 0xF)]
                    index += 1
                }
            }
            func dash() {
                buffer[index] = UInt8(ascii: "-")
                index += 1
            }
            put(high >> 32, nibbles: 8); dash()
            put(high >> 16, nibbles: 4); dash()
            put(high, nibbles: 4); dash()
            put(low >> 48, nibbles: 4); dash()
            put(low, nibbles: 12)
            return index
        }
    }

    /// The client's `x-request-id`, for correlation only: visible ASCII, at most 128 bytes
    /// (longer ones are cut), anything else dropped; nil when nothing usable is left.
    public static func clientGiven(_ given: String) -> String? {
        let kept = given.utf8.lazy.filter { (0x21...0x7E).contains($0) }.prefix(128)
        return kept.isEmpty ? nil : String(decoding: Array(kept), as: UTF8.self)
    }
}
