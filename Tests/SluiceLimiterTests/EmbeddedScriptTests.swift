import Foundation
import Testing

@testable import SluiceLimiter

@Suite("Embedded Lua scripts")
struct EmbeddedScriptTests {
    private static let luaFolder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("lua")

    @Test(arguments: [("admit", EmbeddedLua.admit), ("settle", EmbeddedLua.settle), ("shared", EmbeddedLua.shared), ("renew", EmbeddedLua.renew),
                        ("sweep", EmbeddedLua.sweep)])
    func binaryCarriesExactlyWhatLuaFolderHolds(name: String, embedded: String) throws {
        let file = try String(contentsOf: Self.luaFolder.appendingPathComponent("\(name).lua"), encoding: .utf8)
        #expect(file == embedded + "\n", "lua/\(name).lua differs from the embedded copy: run scripts/embed.sh")
    }

    @Test func everyLuaFileIsEmbedded() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.luaFolder.path).filter { $0.hasSuffix(".lua") }
        #expect(Set(files) == ["admit.lua", "settle.lua", "shared.lua", "renew.lua", "sweep.lua", "seed.lua"])
    }
}
