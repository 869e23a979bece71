#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The server's request ids: random version-4 UUIDs in lowercase text, from the system's
/// generator. Its bytes are drawn 2 KiB at a time (`RandomPool`): one `getrandom` per 128 ids
/// instead of two per id, which showed as a syscall per request in the proxy benchmark's
/// `strace -c`. (Foundation's `UUID()` opened /dev/urandom on every call.)
public enum RequestID {
    private static let hex = Array("0123456789abcdef".utf8)
    private static let pool = Mutex(RandomPool())

    public static func make() -> String {
        let (first, second) = pool.withLock { $0.nextPair() }
        let high = first & 0xFFFF_FFFF_FFFF_0FFF | 0x0000_0000_0000_4000  // version 4
        let low = second & 0x3FFF_FFFF_FFFF_FFFF | 0x8000_0000_0000_0000  // RFC 4122 variant
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

/// Random 64-bit values from the system generator, drawn in blocks: one read of /dev/urandom
/// (kept open) per block, or, should that fail, the standard library's generator value by value.
struct RandomPool {
    private static let source = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    private var values = [UInt64](repeating: 0, count: 256)
    private var next = 256

    mutating func nextPair() -> (UInt64, UInt64) {
        if next + 2 > values.count {
            values.withUnsafeMutableBytes { bytes in
                var filled = 0
                while Self.source >= 0, filled < bytes.count {
                    let got = read(Self.source, bytes.baseAddress! + filled, bytes.count - filled)
                    if got > 0 { filled += got } else if got < 0, errno == EINTR { continue } else { break }
                }
                guard filled < bytes.count else { return }
                var generator = SystemRandomNumberGenerator()
                for index in 0..<(bytes.count / 8) {
                    bytes.storeBytes(of: generator.next() as UInt64, toByteOffset: index * 8, as: UInt64.self)
                }
            }
            next = 0
        }
        defer { next += 2 }
        return (values[next], values[next + 1])
    }
}
