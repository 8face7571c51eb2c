// Runs a fuzz target over corpus files and directories: the corpus as an
// ordinary test, in any build, with any compiler.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    int count = 0;
    for (int i = 1; i < argc; ++i) {
        std::filesystem::path root(argv[i]);
        auto run = [&](const std::filesystem::path& p) {
            std::ifstream in(p, std::ios::binary);
            std::stringstream ss;
            ss << in.rdbuf();
            const std::string s = ss.str();
            // A buffer of exactly the input's size, as libFuzzer gives: a sanitizer sees a
            // read one byte past the end (a string's terminator would hide it).
            std::unique_ptr<std::uint8_t[]> exact(new std::uint8_t[s.size() ? s.size() : 1]);
            std::copy(s.begin(), s.end(), exact.get());
            LLVMFuzzerTestOneInput(exact.get(), s.size());
            ++count;
        };
        if (std::filesystem::is_directory(root)) {
            for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
                if (e.is_regular_file()) run(e.path());
            }
        } else {
            run(root);
        }
    }
    std::printf("replayed %d inputs\n", count);
    return count > 0 ? 0 : 1;
}
