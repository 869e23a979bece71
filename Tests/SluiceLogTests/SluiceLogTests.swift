import Foundation
import Logging
import Testing

@testable import SluiceLog

@Suite("Log lines")
struct SluiceLogTests {
    @Test func linesAreValidJSONWithKeysInTheOrderWritten() throws {
        var line = JSONLineEncoder()
        let hostile = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} unicode é 🚀"
        line.begin()
        line.field("b", hostile)
        line.field("a", -42)
        line.field("z", 0)
        line.field(dynamic: "k\"ey", "v")
        line.end()
        let text = String(decoding: line.bytes, as: UTF8.self)
        #expect(text.hasSuffix("}\n") && text.filter { $0 == "\n" }.count == 1, "one line")
        #expect(text.hasPrefix(#"{"b":"#) && text.contains(#","a":-42,"z":0,"#))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])
        #expect(object["b"] as? String == hostile)
        #expect(object["a"] as? Int == -42)
        #expect(object["k\"ey"] as? String == "v")
    }

    @Test func integersAtTheEdges() throws {
        for value in [0, 7, 10, 999, Int.max, Int.min + 1, -1] {
            var line = JSONLineEncoder()
            line.begin()
            line.field("n", value)
            line.end()
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.bytes)) as? [String: Any])
            #expect((object["n"] as? NSNumber)?.int64Value == Int64(value))
        }
    }

    @Test func timestampsAreISO8601InUTCWithMilliseconds() {
        let text = String(decoding: LogTimestamp.json(seconds: 1_795_780_347, milliseconds: 7), as: UTF8.self)
        #expect(text == #""2026-11-27T11:52:27.007Z""#)
        let next = String(decoding: LogTimestamp.json(seconds: 1_795_780_348, milliseconds: 999), as: UTF8.self)
        #expect(next == #""2026-11-27T11:52:28.999Z""#, "the cached prefix follows the second")
    }

    @Test func theLogHandlerWritesSortedMetadataAndNumbers() throws {
        var line = JSONLineEncoder()
        JSONLogHandler.encode(LogEvent(level: .warning, message: "hello", metadata: ["zeta": "1", "alpha": "x", "mid": "\(3.5)"],
                                       source: "s", file: "f", function: "g", line: 1),
                              label: "sluice", metadata: ["alpha": "overridden"], into: &line)
        let text = String(decoding: line.bytes, as: UTF8.self)
        #expect(text.contains(#""level":"warning","logger":"sluice","msg":"hello","alpha":"x","mid":"3.5","zeta":1}"#), "\(text)")
    }

    /// The writer never blocks and never grows past its capacity: what does not fit is dropped
    /// and counted; what fits reaches the file descriptor, in order.
    @Test func theWriterIsBoundedAndDeliversInOrder() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let writer = LogLineWriter(fileDescriptor: fds[1], capacity: 64)
        let line = Array("0123456789012345678901234567890\n".utf8)  // 32 bytes
        // Nobody reads yet: once the pipe (64 KiB) is full the writer thread blocks, its 64-byte
        // buffer fills, and the rest of 320 KB must be dropped, not queued, not waited for.
        let clock = ContinuousClock()
        let started = clock.now
        for _ in 0..<10_000 { writer.append(line) }
        #expect(clock.now - started < .seconds(5), "append waited on the write")
        let readEnd = fds[0]
        let reader = Task.detached { FileHandle(fileDescriptor: readEnd).readDataToEndOfFile() }
        writer.flush()
        close(fds[1])
        let received = await reader.value
        close(fds[0])
        let lines = received.split(separator: 0x0A)
        #expect(lines.count + writer.dropped == 10_000)
        #expect(writer.dropped > 0)
        #expect(lines.allSatisfy { Array($0) == Array(line.dropLast()) })
    }
}
