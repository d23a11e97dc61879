// Checks libvidtrt_plugins.so the way TensorRT meets it: dlopen, the two C
// entry points, then the plugin objects only through TensorRT's interfaces.
// Needs neither a GPU nor libnvinfer: every call made here stays on the host
// (the one enqueue that runs has an empty batch, which returns before CUDA).
//
// usage: vidtrt_plugin_library_test path/to/libvidtrt_plugins.so
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <elf.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginCreatorInterface;
using nvinfer1::IPluginCreatorV3One;
using nvinfer1::IPluginV3;
using nvinfer1::IPluginV3OneBuild;
using nvinfer1::IPluginV3OneCore;
using nvinfer1::IPluginV3OneRuntime;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;
using nvinfer1::TensorRTPhase;
using Severity = nvinfer1::ILogger::Severity;

// ---------------------------------------------------------------- reporting

namespace {

int gPassed = 0;
int gFailed = 0;

void check(bool ok, const std::string& what, const char* file, int line) {
    if (ok) {
        ++gPassed;
    } else {
        ++gFailed;
        std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what.c_str());
    }
}

#define CHECK(cond, what) check(static_cast<bool>(cond), std::string(what) + "  [" #cond "]", __FILE__, __LINE__)

int finish() {
    std::printf("%d passed, %d failed\n", gPassed, gFailed);
    return gFailed == 0 ? 0 : 1;
}

// Stops the run: what follows depends on it.
[[noreturn]] void fatal(const std::string& what) {
    ++gFailed;
    std::fprintf(stderr, "FATAL: %s\n", what.c_str());
    std::exit(finish());
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---------------------------------------------------------------- logger

class RecordingLogger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char* msg) noexcept override {
        std::lock_guard<std::mutex> lock(mMutex);
        mMessages.emplace_back(severity, msg != nullptr ? msg : "");
        if (std::getenv("VIDTRT_TEST_VERBOSE") != nullptr) std::fprintf(stderr, "  [log %d] %s\n", int(severity), msg);
    }
    size_t size() {
        std::lock_guard<std::mutex> lock(mMutex);
        return mMessages.size();
    }
    // Was a message of `severity` containing every part logged after `mark`?
    bool loggedSince(size_t mark, Severity severity, std::initializer_list<const char*> parts) {
        std::lock_guard<std::mutex> lock(mMutex);
        for (size_t i = mark; i < mMessages.size(); ++i) {
            if (mMessages[i].first != severity) continue;
            bool all = true;
            for (const char* p : parts) all = all && contains(mMessages[i].second, p);
            if (all) return true;
        }
        return false;
    }
    bool anySince(size_t mark, Severity severity) {
        std::lock_guard<std::mutex> lock(mMutex);
        for (size_t i = mark; i < mMessages.size(); ++i) {
            if (mMessages[i].first == severity) return true;
        }
        return false;
    }
    std::string lastMessage() {
        std::lock_guard<std::mutex> lock(mMutex);
        return mMessages.empty() ? std::string() : mMessages.back().second;
    }

private:
    std::mutex mMutex;
    std::vector<std::pair<Severity, std::string>> mMessages;
};

class TestLoggerFinder final : public nvinfer1::ILoggerFinder {
public:
    explicit TestLoggerFinder(nvinfer1::ILogger* logger) : mLogger(logger) {}
    ~TestLoggerFinder() override = default;
    nvinfer1::ILogger* findLogger() override { return mLogger; }

private:
    nvinfer1::ILogger* mLogger;
};

// ---------------------------------------------------------------- fake IExprBuilder
//
// IExprBuilder and IDimensionExpr forward every call to an implementation
// object (apiv::VExprBuilder / apiv::VDimensionExpr, declared in
// NvInferImpl.h) through a protected mImpl pointer. Supplying those objects
// gives a builder that behaves like TensorRT's for constants; everything else
// becomes an opaque symbol. Test-only: TensorRT warns against deriving from
// these classes in code that must survive header upgrades.

class FakeDimExpr final : public IDimensionExpr {
public:
    FakeDimExpr(bool constant, int64_t value) : mImplObject(constant, value) { mImpl = &mImplObject; }
    ~FakeDimExpr() noexcept override = default;

private:
    class Impl final : public nvinfer1::apiv::VDimensionExpr {
    public:
        Impl(bool constant, int64_t value) : mConstant(constant), mValue(value) {}
        bool isConstant() const override { return mConstant; }
        int64_t getConstantValue() const override { return mConstant ? mValue : INT64_MIN; }
        bool isSizeTensor() const override { return false; }

    private:
        bool mConstant;
        int64_t mValue;
    };
    Impl mImplObject;
};

class FakeExprBuilder final : public nvinfer1::IExprBuilder {
public:
    FakeExprBuilder() : mImplObject(*this) { mImpl = &mImplObject; }
    ~FakeExprBuilder() noexcept override = default;

    const IDimensionExpr* symbol() { return make(false, 0); }
    const IDimensionExpr* make(bool constant, int64_t value) {
        mExprs.push_back(std::make_unique<FakeDimExpr>(constant, value));
        return mExprs.back().get();
    }
    DimsExprs dims(std::initializer_list<int64_t> extents) {  // -1 makes a symbol
        DimsExprs d{};
        d.nbDims = static_cast<int32_t>(extents.size());
        int32_t i = 0;
        for (int64_t e : extents) d.d[i++] = e < 0 ? symbol() : constant(e);
        return d;
    }

private:
    class Impl final : public nvinfer1::apiv::VExprBuilder {
    public:
        explicit Impl(FakeExprBuilder& owner) : mOwner(owner) {}
        const IDimensionExpr* constant(int64_t value) override { return mOwner.make(true, value); }
        const IDimensionExpr* operation(nvinfer1::DimensionOperation op, const IDimensionExpr& a,
                                        const IDimensionExpr& b) override {
            if (!a.isConstant() || !b.isConstant()) return mOwner.symbol();
            const int64_t x = a.getConstantValue();
            const int64_t y = b.getConstantValue();
            using Op = nvinfer1::DimensionOperation;
            switch (op) {
                case Op::kSUM: return constant(x + y);
                case Op::kPROD: return constant(x * y);
                case Op::kMAX: return constant(x > y ? x : y);
                case Op::kMIN: return constant(x < y ? x : y);
                case Op::kSUB: return constant(x - y);
                case Op::kEQUAL: return constant(x == y);
                case Op::kLESS: return constant(x < y);
                case Op::kFLOOR_DIV: return y == 0 ? nullptr : constant(x / y - ((x % y != 0) && ((x < 0) != (y < 0))));
                case Op::kCEIL_DIV: return y == 0 ? nullptr : constant(x / y + ((x % y != 0) && ((x < 0) == (y < 0))));
            }
            return nullptr;
        }
        const IDimensionExpr* declareSizeTensor(int32_t, const IDimensionExpr&, const IDimensionExpr&) override {
            return mOwner.symbol();
        }

    private:
        FakeExprBuilder& mOwner;
    };
    Impl mImplObject;
    std::vector<std::unique_ptr<FakeDimExpr>> mExprs;
};

// ---------------------------------------------------------------- ELF inspection
//
// What the dynamic linker sees: the exported (defined, global) symbols and the
// DT_NEEDED libraries. Read straight from the file so the test does not depend
// on binutils being installed.

struct ElfDynamicInfo {
    bool ok = false;
    std::string error;
    std::set<std::string> exported;
    std::vector<std::string> needed;
};

ElfDynamicInfo readElfDynamicInfo(const char* path) {
    ElfDynamicInfo info;
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.size() < sizeof(Elf64_Ehdr)) {
        info.error = "file too small to be ELF";
        return info;
    }
    Elf64_Ehdr eh;
    std::memcpy(&eh, bytes.data(), sizeof(eh));
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) {
        info.error = "not a 64-bit ELF file";
        return info;
    }
    auto section = [&](size_t i) {
        Elf64_Shdr sh;
        std::memcpy(&sh, bytes.data() + eh.e_shoff + i * eh.e_shentsize, sizeof(sh));
        return sh;
    };
    auto inFile = [&](uint64_t off, uint64_t size) { return off <= bytes.size() && size <= bytes.size() - off; };
    if (!inFile(eh.e_shoff, uint64_t(eh.e_shnum) * eh.e_shentsize) || eh.e_shentsize < sizeof(Elf64_Shdr)) {
        info.error = "section headers outside the file";
        return info;
    }
    auto str = [&](const Elf64_Shdr& strtab, uint64_t off) -> std::string {
        if (off >= strtab.sh_size || !inFile(strtab.sh_offset, strtab.sh_size)) return {};
        const char* s = bytes.data() + strtab.sh_offset + off;
        return std::string(s, strnlen(s, strtab.sh_size - off));
    };
    bool sawDynsym = false;
    for (size_t i = 0; i < eh.e_shnum; ++i) {
        const Elf64_Shdr sh = section(i);
        if (sh.sh_link >= eh.e_shnum || !inFile(sh.sh_offset, sh.sh_size)) continue;
        if (sh.sh_type == SHT_DYNSYM) {
            sawDynsym = true;
            const Elf64_Shdr strtab = section(sh.sh_link);
            for (uint64_t off = 0; off + sizeof(Elf64_Sym) <= sh.sh_size; off += sizeof(Elf64_Sym)) {
                Elf64_Sym sym;
                std::memcpy(&sym, bytes.data() + sh.sh_offset + off, sizeof(sym));
                const unsigned bind = ELF64_ST_BIND(sym.st_info);
                const unsigned vis = ELF64_ST_VISIBILITY(sym.st_other);
                if (sym.st_shndx == SHN_UNDEF || sym.st_name == 0) continue;
                if (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE) continue;
                if (vis != STV_DEFAULT && vis != STV_PROTECTED) continue;
                info.exported.insert(str(strtab, sym.st_name));
            }
        } else if (sh.sh_type == SHT_DYNAMIC) {
            const Elf64_Shdr strtab = section(sh.sh_link);
            for (uint64_t off = 0; off + sizeof(Elf64_Dyn) <= sh.sh_size; off += sizeof(Elf64_Dyn)) {
                Elf64_Dyn dyn;
                std::memcpy(&dyn, bytes.data() + sh.sh_offset + off, sizeof(dyn));
                if (dyn.d_tag == DT_NULL) break;
                if (dyn.d_tag == DT_NEEDED) info.needed.push_back(str(strtab, dyn.d_un.d_val));
            }
        }
    }
    if (!sawDynsym) {
        info.error = "no .dynsym section";
        return info;
    }
    info.ok = true;
    return info;
}

void testLibraryFile(const char* path) {
    const ElfDynamicInfo info = readElfDynamicInfo(path);
    if (!info.ok) fatal(std::string("cannot read the dynamic symbols of ") + path + ": " + info.error);
    CHECK(info.exported.count("getCreators") == 1, "getCreators is exported");
    CHECK(info.exported.count("setLoggerFinder") == 1, "setLoggerFinder is exported");
    CHECK(info.exported.count("vidtrtPluginLibraryInfo") == 1, "vidtrtPluginLibraryInfo is exported");
    std::string ours;  // exported vidtrt symbols besides the entry points
    for (const std::string& name : info.exported) {
        if (name == "getCreators" || name == "setLoggerFinder" || name == "vidtrtPluginLibraryInfo") continue;
        // Itanium mangling spells namespace vidtrt as "6vidtrt".
        if (contains(name, "vidtrt") || contains(name, "psla") || contains(name, "Psla") || contains(name, "PSLA")) {
            ours += " " + name;
        }
    }
    CHECK(ours.empty(),
          "no vidtrt symbol besides getCreators, setLoggerFinder and vidtrtPluginLibraryInfo is exported:" + ours);
    std::string forbidden;  // libraries that must not be needed at load time
    for (const std::string& lib : info.needed) {
        if (contains(lib, "nvinfer") || contains(lib, "libcuda.so") || contains(lib, "libcudart.so")) {
            forbidden += " " + lib;
        }
    }
    // No libnvinfer: the library must load in any process of its TensorRT major. No
    // libcuda / libcudart: cudart is static and opens the driver lazily.
    CHECK(forbidden.empty(), "needs neither TensorRT nor the CUDA driver or shared cudart:" + forbidden);
}

// ---------------------------------------------------------------- plugin helpers

constexpr const char* kName = "PSLA";
constexpr const char* kVersion = "1";
constexpr const char* kNamespace = "vidtrt";
constexpr const char* kField = "max_disp";

RecordingLogger gLogger;

Dims dims(std::initializer_list<int64_t> extents) {
    Dims d{};
    d.nbDims = static_cast<int32_t>(extents.size());
    int32_t i = 0;
    for (int64_t e : extents) d.d[i++] = e;
    return d;
}

PluginTensorDesc desc(Dims d, DataType type = DataType::kFLOAT, TensorFormat format = TensorFormat::kLINEAR) {
    PluginTensorDesc t{};
    t.dims = d;
    t.type = type;
    t.format = format;
    t.scale = 1.0F;
    return t;
}

DynamicPluginTensorDesc dynDesc(Dims d, DataType type = DataType::kFLOAT, TensorFormat format = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc t{};
    t.desc = desc(d, type, format);
    // Profile bounds: wildcards (-1) become a concrete 1..8 range.
    t.min = t.opt = t.max = d;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (d.d[i] < 0) {
            t.min.d[i] = 1;
            t.opt.d[i] = 4;
            t.max.d[i] = 8;
        }
    }
    return t;
}

struct Plugin {
    std::unique_ptr<IPluginV3> owner;
    IPluginV3OneCore* core = nullptr;
    IPluginV3OneBuild* build = nullptr;
    IPluginV3OneRuntime* runtime = nullptr;
    explicit operator bool() const { return owner && core && build && runtime; }
};

// TensorRT hands out capability objects as IPluginCapability and downcasts them
// by the kind it asked for; the test does the same.
Plugin wrap(IPluginV3* raw) {
    Plugin p;
    p.owner.reset(raw);
    if (raw == nullptr) return p;
    p.core = static_cast<IPluginV3OneCore*>(raw->getCapabilityInterface(PluginCapabilityType::kCORE));
    p.build = static_cast<IPluginV3OneBuild*>(raw->getCapabilityInterface(PluginCapabilityType::kBUILD));
    p.runtime = static_cast<IPluginV3OneRuntime*>(raw->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    return p;
}

struct Fields {
    std::vector<PluginField> fields;
    PluginFieldCollection collection() const { return PluginFieldCollection{int32_t(fields.size()), fields.data()}; }
};

// A plugin's good fields with field `index` replaced, or left out: the
// creation-error cases of every plugin start from these.
template <typename ParamFieldsT>
Fields withField(const ParamFieldsT& base, size_t index, PluginField replacement) {
    Fields f = base.fields();
    f.fields[index] = replacement;
    return f;
}

template <typename ParamFieldsT>
Fields without(const ParamFieldsT& base, size_t index) {
    Fields f = base.fields();
    f.fields.erase(f.fields.begin() + static_cast<std::ptrdiff_t>(index));
    return f;
}

// ---------------------------------------------------------------- checks shared by every plugin
//
// The four plugins meet TensorRT through the same interfaces and share their
// rules for identity, capabilities, output types, formats and copies, so those
// checks are written once here; `label` names the plugin in the messages.
// Each plugin's section below keeps only what is particular to it.

Plugin createLayer(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase, const char* layer) {
    const PluginFieldCollection fc = f.collection();
    return wrap(creator.createPlugin(layer, &fc, phase));
}

bool hasIdentity(const IPluginV3OneCore& core, const char* name) {
    return std::string(core.getPluginName()) == name && std::string(core.getPluginVersion()) == kVersion &&
           std::string(core.getPluginNamespace()) == kNamespace;
}

// The value of a serialized collection that holds exactly one INT32 scalar
// called `field`, or -1000 if it holds anything else.
int32_t serializedInt32(IPluginV3OneRuntime& runtime, const char* field) {
    const PluginFieldCollection* fc = runtime.getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 1 || fc->fields == nullptr) return -1000;
    const PluginField& f = fc->fields[0];
    if (f.name == nullptr || std::strcmp(f.name, field) != 0 || f.type != PluginFieldType::kINT32 || f.length != 1 ||
        f.data == nullptr) {
        return -1000;
    }
    int32_t v;
    std::memcpy(&v, f.data, sizeof(v));
    return v;
}

// Asks supportsFormatCombination position by position, as TensorRT does, and
// reports whether the whole combination is accepted. Tensor i gets shape
// shapes[i % shapes.size()].
bool acceptsCombinationOf(IPluginV3OneBuild& build, const std::vector<Dims>& shapes, int32_t nbInputs,
                          std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    std::vector<DynamicPluginTensorDesc> inOut;
    size_t i = 0;
    for (const auto& t : io) inOut.push_back(dynDesc(shapes[i++ % shapes.size()], t.first, t.second));
    for (int32_t pos = 0; pos < int32_t(inOut.size()); ++pos) {
        if (!build.supportsFormatCombination(pos, inOut.data(), nbInputs, 1)) return false;
    }
    return true;
}

bool constantDims(const DimsExprs& d, std::initializer_list<int64_t> want) {
    if (d.nbDims != int32_t(want.size())) return false;
    int32_t i = 0;
    for (int64_t w : want) {
        const IDimensionExpr* e = d.d[i++];
        if (e == nullptr || !e->isConstant() || e->getConstantValue() != w) return false;
    }
    return true;
}

// The one creator called `name` in namespace vidtrt; stops the run without it.
IPluginCreatorV3One& findCreator(IPluginCreatorInterface* const* creators, int32_t nbCreators, const char* name) {
    IPluginCreatorV3One* creator = nullptr;
    int32_t count = 0;
    for (int32_t i = 0; creators != nullptr && i < nbCreators; ++i) {
        if (creators[i] == nullptr || std::string(creators[i]->getInterfaceInfo().kind) != "PLUGIN CREATOR_V3ONE") {
            continue;
        }
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::string(c->getPluginName()) == name && std::string(c->getPluginNamespace()) == kNamespace) {
            creator = c;
            ++count;
        }
    }
    CHECK(count == 1, std::string("exactly one ") + name + " creator in namespace vidtrt");
    if (creator == nullptr) fatal(std::string("no ") + name + " creator");
    return *creator;
}

struct FieldSpec {
    const char* name;
    PluginFieldType type;
};

// The creator's interface, identity and advertised fields: exactly `fields`,
// in order, each a scalar of the type the ONNX parser sends (INT as kINT32,
// FLOAT as kFLOAT32).
void checkCreatorIdentity(IPluginCreatorV3One& creator, const std::string& label, const char* name,
                          std::initializer_list<FieldSpec> fields) {
    const nvinfer1::InterfaceInfo info = creator.getInterfaceInfo();
    CHECK(std::string(info.kind) == "PLUGIN CREATOR_V3ONE", label + " creator interface kind is PLUGIN CREATOR_V3ONE");
    CHECK(info.major == 1 && info.minor == 0, label + " creator interface version is 1.0");
    CHECK(std::string(creator.getPluginName()) == name, std::string("creator name is ") + name);
    CHECK(std::string(creator.getPluginVersion()) == kVersion, label + " creator version is 1");
    CHECK(std::string(creator.getPluginNamespace()) == kNamespace, label + " creator namespace is vidtrt");

    const PluginFieldCollection* fc = creator.getFieldNames();
    CHECK(fc != nullptr, label + " getFieldNames returns a collection");
    if (fc == nullptr) return;
    const int32_t count = static_cast<int32_t>(fields.size());
    const bool shape = fc->nbFields == count && (count == 0 || fc->fields != nullptr);
    CHECK(shape, label + " advertises exactly " + std::to_string(count) + " field(s)");
    if (!shape) return;
    int32_t i = 0;
    for (const FieldSpec& want : fields) {
        const PluginField& f = fc->fields[i];
        CHECK(f.name != nullptr && std::string(f.name) == want.name,
              label + " advertised field " + std::to_string(i) + " is " + want.name);
        CHECK(f.type == want.type, std::string(want.name) + " is advertised with the type the ONNX parser sends");
        CHECK(f.length == 1, std::string(want.name) + " is advertised as a scalar");
        ++i;
    }
}

// What every plugin's capabilities look like: one IPluginV3 1.x with the v1
// core, build and runtime interfaces, its identity, one output, no tactics.
void checkInterfaces(const Plugin& p, const std::string& label, const char* name) {
    const nvinfer1::InterfaceInfo v3 = p.owner->getInterfaceInfo();
    CHECK(std::string(v3.kind) == "PLUGIN", label + " is an IPluginV3");
    CHECK(v3.major == 1, label + " is an IPluginV3 1.x");
    CHECK(std::string(p.core->getInterfaceInfo().kind) == "PLUGIN_V3ONE_CORE", label + " kCORE is IPluginV3OneCore");
    CHECK(std::string(p.build->getInterfaceInfo().kind) == "PLUGIN_V3ONE_BUILD", label + " kBUILD is IPluginV3OneBuild");
    CHECK(p.build->getInterfaceInfo().major == 1, label + " build capability is the v1 interface");
    CHECK(std::string(p.runtime->getInterfaceInfo().kind) == "PLUGIN_V3ONE_RUNTIME",
          label + " kRUNTIME is IPluginV3OneRuntime");
    CHECK(hasIdentity(*p.core, name), std::string("plugin reports ") + name + " / 1 / vidtrt");
    CHECK(p.build->getNbOutputs() == 1, label + " has one output");
    CHECK(p.runtime->setTactic(0) == 0, label + " setTactic(0) succeeds");
}

// The output takes the inputs' type when all are FP32 or all FP16; BF16 is
// refused with a log line containing `loggedParts`, and so is a layer with
// `wrongNbInputs` inputs.
void checkOutputTypes(IPluginV3OneBuild& build, const std::string& label, int32_t nbInputs, int32_t wrongNbInputs,
                      std::initializer_list<const char*> loggedParts) {
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
        const std::vector<DataType> in(static_cast<size_t>(nbInputs), t);
        DataType out[1] = {DataType::kINT8};
        CHECK(build.getOutputDataTypes(out, 1, in.data(), nbInputs) == 0 && out[0] == t,
              label + " output type follows the inputs: " + (t == DataType::kFLOAT ? "FP32" : "FP16"));
    }
    const size_t mark = gLogger.size();
    const std::vector<DataType> bf16(static_cast<size_t>(nbInputs), DataType::kBF16);
    DataType out[1];
    CHECK(build.getOutputDataTypes(out, 1, bf16.data(), nbInputs) != 0, label + " getOutputDataTypes refuses BF16");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, loggedParts), label + ": the refused type is logged");
    const std::vector<DataType> wrong(static_cast<size_t>(wrongNbInputs), DataType::kFLOAT);
    CHECK(build.getOutputDataTypes(out, 1, wrong.data(), wrongNbInputs) != 0,
          label + " getOutputDataTypes refuses " + std::to_string(wrongNbInputs) + " inputs");
}

// The format rule every plugin shares: one linear FP32 or FP16 type on all
// tensors; everything else, and positions or layers that do not exist, refused.
void checkCommonFormats(IPluginV3OneBuild& build, const std::string& label, const std::vector<Dims>& shapes,
                        int32_t nbInputs, int32_t wrongNbInputs) {
    using P = std::pair<DataType, TensorFormat>;
    const int32_t nbIo = nbInputs + 1;
    auto all = [&](P t) { return std::vector<P>(static_cast<size_t>(nbIo), t); };
    auto accepts = [&](const std::vector<P>& io) {
        std::vector<DynamicPluginTensorDesc> inOut;
        for (size_t i = 0; i < io.size(); ++i) inOut.push_back(dynDesc(shapes[i % shapes.size()], io[i].first, io[i].second));
        for (int32_t pos = 0; pos < nbIo; ++pos) {
            if (!build.supportsFormatCombination(pos, inOut.data(), nbInputs, 1)) return false;
        }
        return true;
    };
    const P f32{DataType::kFLOAT, TensorFormat::kLINEAR};
    const P f16{DataType::kHALF, TensorFormat::kLINEAR};
    CHECK(accepts(all(f32)), label + ": all FP32 linear is accepted");
    CHECK(accepts(all(f16)), label + ": all FP16 linear is accepted");
    std::vector<P> halfOut = all(f32);
    halfOut.back() = f16;
    CHECK(!accepts(halfOut), label + ": FP16 output from FP32 inputs is refused");
    CHECK(!accepts(all(P{DataType::kINT8, TensorFormat::kLINEAR})), label + ": INT8 is refused");
    CHECK(!accepts(all(P{DataType::kINT32, TensorFormat::kLINEAR})), label + ": INT32 is refused");
    CHECK(!accepts(all(P{DataType::kBF16, TensorFormat::kLINEAR})), label + ": BF16 is refused");

    std::vector<DynamicPluginTensorDesc> io;
    for (int32_t i = 0; i < nbIo; ++i) io.push_back(dynDesc(shapes[size_t(i) % shapes.size()]));
    CHECK(!build.supportsFormatCombination(nbIo, io.data(), nbInputs, 1),
          label + ": position past the last output is refused");
    CHECK(!build.supportsFormatCombination(-1, io.data(), nbInputs, 1), label + ": negative position is refused");
    CHECK(!build.supportsFormatCombination(0, io.data(), wrongNbInputs, 1),
          label + ": a " + std::to_string(wrongNbInputs) + "-input layer is refused");
}

// createPlugin with `fields` returns nullptr and logs an error with `parts`.
void checkRefused(IPluginCreatorV3One& creator, const char* layer, const Fields& fields,
                  std::initializer_list<const char*> parts, const std::string& what,
                  TensorRTPhase phase = TensorRTPhase::kBUILD) {
    const size_t mark = gLogger.size();
    Plugin p = createLayer(creator, fields, phase, layer);
    CHECK(!p.owner, what + ": createPlugin returns nullptr");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, parts), what + ": an error is logged");
}

// What TensorRT does with a plugin after building it: rebuild it from its
// serialized fields (phase kRUNTIME), clone it, attach it to a context, and
// drop the original. Every copy must keep its identity and pass `keepsState`
// after the original is gone (nothing may point into it).
void checkRestoreAndCopies(IPluginCreatorV3One& creator, Plugin& original, const std::string& label, const char* name,
                           const std::function<bool(Plugin&)>& keepsState) {
    const PluginFieldCollection* serialized = original.runtime->getFieldsToSerialize();
    Plugin restored = wrap(creator.createPlugin("restored", serialized, TensorRTPhase::kRUNTIME));
    CHECK(static_cast<bool>(restored), "the " + label + " creator rebuilds the plugin from its serialized fields");
    if (restored) {
        CHECK(hasIdentity(*restored.core, name), "the rebuilt " + label + " plugin has the same identity");
        CHECK(keepsState(restored), label + " state survives serialization");
    }

    Plugin clone = wrap(original.owner->clone());
    CHECK(static_cast<bool>(clone), label + " clone returns a plugin with all three capabilities");
    CHECK(clone.owner.get() != original.owner.get(), label + " clone is a new object");
    Plugin attached = wrap(original.runtime->attachToContext(nullptr));
    CHECK(static_cast<bool>(attached) && attached.owner.get() != original.owner.get(),
          label + " attachToContext returns a new plugin");
    // Destroy the original first: the copies must not point into it.
    original.owner.reset();
    if (clone) {
        CHECK(hasIdentity(*clone.core, name), label + " clone keeps name, version and namespace");
        CHECK(keepsState(clone), label + " clone keeps its state after the original is gone");
    }
    if (attached) {
        CHECK(hasIdentity(*attached.core, name), "attached " + label + " copy keeps its identity");
        CHECK(keepsState(attached), "attached " + label + " copy keeps its state");
    }
}

// ---------------------------------------------------------------- PSLA helpers

Plugin create(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return createLayer(creator, f, phase, "psla_test");
}

int32_t serializedMaxDisp(IPluginV3OneRuntime& runtime) { return serializedInt32(runtime, kField); }

bool acceptsCombination(IPluginV3OneBuild& build, std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    return acceptsCombinationOf(build, {dims({2, 16, 8, 12})}, 3, io);
}

// ---------------------------------------------------------------- tests

void testCreatorIdentity(IPluginCreatorV3One& creator) {
    checkCreatorIdentity(creator, "PSLA", kName, {{kField, PluginFieldType::kINT32}});
}

void testInterfaces(const Plugin& p) {
    checkInterfaces(p, "PSLA", kName);
    CHECK(p.build->getWorkspaceSize(nullptr, 0, nullptr, 0) == 0, "no workspace");
    const char* meta = p.build->getMetadataString();
    CHECK(meta != nullptr && contains(meta, "max_disp=4"), "metadata names max_disp");
}

void testOutputTypes(IPluginV3OneBuild& build) { checkOutputTypes(build, "PSLA", 3, 2, {"value", "kBF16"}); }

void testFormats(IPluginV3OneBuild& build) {
    checkCommonFormats(build, "PSLA", {dims({2, 16, 8, 12})}, 3, 2);
    using P = std::pair<DataType, TensorFormat>;
    const auto F32 = P{DataType::kFLOAT, TensorFormat::kLINEAR};
    const auto F16 = P{DataType::kHALF, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F32, F16, F32, F32}), "FP32 query with FP16 key is refused");
    CHECK(!acceptsCombination(build, {F16, F16, F32, F16}), "FP32 value among FP16 is refused");
    const auto F16x32 = P{DataType::kHALF, TensorFormat::kCHW32};
    CHECK(!acceptsCombination(build, {F16x32, F16x32, F16x32, F16x32}), "FP16 kCHW32 is refused");
    const auto F32x32 = P{DataType::kFLOAT, TensorFormat::kCHW32};
    CHECK(!acceptsCombination(build, {F32x32, F32x32, F32x32, F32x32}), "FP32 kCHW32 is refused");
    const auto F16hwc8 = P{DataType::kHALF, TensorFormat::kHWC8};
    CHECK(!acceptsCombination(build, {F16hwc8, F16hwc8, F16hwc8, F16hwc8}), "FP16 kHWC8 is refused");
    const auto F32hwc = P{DataType::kFLOAT, TensorFormat::kHWC};
    CHECK(!acceptsCombination(build, {F32, F32, F32hwc, F32}), "one kHWC value among linear tensors is refused");
}

void testOutputShapes(IPluginV3OneBuild& build) {
    FakeExprBuilder eb;
    DimsExprs in[3] = {eb.dims({2, 16, 8, 12}), eb.dims({2, 16, 8, 12}), eb.dims({2, 32, 8, 12})};
    DimsExprs out[1]{};
    CHECK(build.getOutputShapes(in, 3, nullptr, 0, out, 1, eb) == 0, "getOutputShapes succeeds on constants");
    bool constants = out[0].nbDims == 4;
    const int64_t want[4] = {2, 32, 8, 12};
    for (int32_t i = 0; constants && i < 4; ++i) {
        constants = out[0].d[i] != nullptr && out[0].d[i]->isConstant() && out[0].d[i]->getConstantValue() == want[i];
    }
    CHECK(constants, "output shape is value's shape [2, 32, 8, 12]");

    DimsExprs sym[3] = {eb.dims({-1, 16, -1, -1}), eb.dims({-1, 16, -1, -1}), eb.dims({-1, 32, -1, -1})};
    CHECK(build.getOutputShapes(sym, 3, nullptr, 0, out, 1, eb) == 0, "getOutputShapes succeeds on symbols");
    bool same = out[0].nbDims == 4;
    for (int32_t i = 0; same && i < 4; ++i) same = out[0].d[i] == sym[2].d[i];
    CHECK(same, "symbolic output dims are value's expressions");

    size_t mark = gLogger.size();
    DimsExprs badH[3] = {eb.dims({2, 16, 8, 12}), eb.dims({2, 16, 9, 12}), eb.dims({2, 32, 8, 12})};
    CHECK(build.getOutputShapes(badH, 3, nullptr, 0, out, 1, eb) != 0, "constant H mismatch is refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"H", "8", "9"}), "the H mismatch is logged");

    mark = gLogger.size();
    DimsExprs rank3[3] = {eb.dims({2, 16, 8, 12}), eb.dims({2, 16, 8, 12}), eb.dims({32, 8, 12})};
    CHECK(build.getOutputShapes(rank3, 3, nullptr, 0, out, 1, eb) != 0, "rank-3 value is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"value", "rank 3"}), "the rank is logged");
}

void testConfigure(IPluginV3OneBuild& build) {
    auto configure = [&](Dims q, Dims k, Dims v, Dims o) {
        DynamicPluginTensorDesc in[3] = {dynDesc(q), dynDesc(k), dynDesc(v)};
        DynamicPluginTensorDesc out[1] = {dynDesc(o)};
        return build.configurePlugin(in, 3, out, 1);
    };
    const Dims q = dims({2, 16, 8, 12});
    const Dims v = dims({2, 32, 8, 12});
    CHECK(configure(q, q, v, v) == 0, "consistent dims configure");
    const Dims qDyn = dims({-1, 16, -1, 12});
    const Dims vDyn = dims({-1, 32, -1, 12});
    CHECK(configure(qDyn, qDyn, vDyn, vDyn) == 0, "build-time wildcards configure");

    size_t mark = gLogger.size();
    CHECK(configure(q, q, dims({3, 32, 8, 12}), dims({3, 32, 8, 12})) != 0, "N mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"N", "[2, 16, 8, 12]", "[3, 32, 8, 12]"}),
          "the N mismatch is logged with both shapes");

    mark = gLogger.size();
    CHECK(configure(q, dims({2, 16, 7, 12}), v, v) != 0, "H mismatch between query and key is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"H", "key"}), "the H mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(q, q, dims({2, 32, 8, 13}), dims({2, 32, 8, 13})) != 0, "W mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"W", "12", "13"}), "the W mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(q, dims({2, 8, 8, 12}), v, v) != 0, "query and key with different c are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"disagree on c"}), "the c mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(dims({16, 8, 12}), q, v, v) != 0, "rank-3 query is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"query", "rank 3"}), "the rank is logged");

    mark = gLogger.size();
    CHECK(configure(q, q, dims({1, 2, 32, 8, 12}), v) != 0, "rank-5 value is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"value", "rank 5"}), "the rank is logged");

    CHECK(configure(q, q, v, dims({2, 16, 8, 12})) != 0, "an output that is not value's shape is refused");

    DynamicPluginTensorDesc in[2] = {dynDesc(q), dynDesc(q)};
    DynamicPluginTensorDesc out[1] = {dynDesc(v)};
    CHECK(build.configurePlugin(in, 2, out, 1) != 0, "two inputs are refused by configurePlugin");
}

void testRuntime(IPluginV3OneRuntime& runtime) {
    auto shapeChange = [&](Dims q, Dims k, Dims v, Dims o) {
        PluginTensorDesc in[3] = {desc(q), desc(k), desc(v)};
        PluginTensorDesc out[1] = {desc(o)};
        return runtime.onShapeChange(in, 3, out, 1);
    };
    const Dims q = dims({2, 16, 8, 12});
    const Dims v = dims({2, 32, 8, 12});
    CHECK(shapeChange(q, q, v, v) == 0, "onShapeChange accepts consistent dims");
    size_t mark = gLogger.size();
    CHECK(shapeChange(q, q, dims({2, 32, 8, 11}), dims({2, 32, 8, 11})) != 0, "onShapeChange refuses a W mismatch");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"W", "[2, 32, 8, 11]"}), "the W mismatch is logged");
    CHECK(shapeChange(dims({-1, 16, 8, 12}), q, v, v) != 0, "onShapeChange refuses unresolved extents");
    CHECK(shapeChange(dims({2, 16, 8, 12, 1}), q, v, v) != 0, "onShapeChange refuses rank 5");

    // An empty batch passes validation and returns before any CUDA call, so
    // this runs the whole enqueue path without a device.
    {
        const Dims q0 = dims({0, 16, 8, 12});
        const Dims v0 = dims({0, 32, 8, 12});
        PluginTensorDesc in[3] = {desc(q0, DataType::kHALF), desc(q0, DataType::kHALF), desc(v0, DataType::kHALF)};
        PluginTensorDesc out[1] = {desc(v0, DataType::kHALF)};
        const void* inputs[3] = {nullptr, nullptr, nullptr};
        void* outputs[1] = {nullptr};
        CHECK(runtime.enqueue(in, out, inputs, outputs, nullptr, nullptr) == 0, "enqueue of an empty batch succeeds");
    }
    {
        PluginTensorDesc in[3] = {desc(q), desc(q), desc(dims({2, 32, 4, 12}))};
        PluginTensorDesc out[1] = {desc(dims({2, 32, 4, 12}))};
        const void* inputs[3] = {nullptr, nullptr, nullptr};
        void* outputs[1] = {nullptr};
        mark = gLogger.size();
        CHECK(runtime.enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0, "enqueue refuses mismatched H");
        CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "H"}), "the enqueue refusal is logged");
    }
    {
        PluginTensorDesc in[3] = {desc(q, DataType::kINT8), desc(q, DataType::kINT8), desc(v, DataType::kINT8)};
        PluginTensorDesc out[1] = {desc(v, DataType::kINT8)};
        const void* inputs[3] = {nullptr, nullptr, nullptr};
        void* outputs[1] = {nullptr};
        CHECK(runtime.enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0, "enqueue refuses INT8");
    }
}

void testSerializationAndClone(IPluginCreatorV3One& creator, Plugin& original) {
    CHECK(serializedMaxDisp(*original.runtime) == 4, "getFieldsToSerialize holds max_disp = 4 as one kINT32");
    for (int32_t md : {0, 1, 8}) {
        Fields f{{PluginField(kField, &md, PluginFieldType::kINT32, 1)}};
        Plugin p = create(creator, f);
        CHECK(p && serializedMaxDisp(*p.runtime) == md, "max_disp round trip for " + std::to_string(md));
    }
    // serializedMaxDisp also checks that exactly {max_disp} is serialized.
    checkRestoreAndCopies(creator, original, "PSLA", kName,
                          [](Plugin& copy) { return serializedMaxDisp(*copy.runtime) == 4; });
}

void testCreationErrors(IPluginCreatorV3One& creator) {
    auto refusedAndLogged = [&](const Fields& f, std::initializer_list<const char*> parts, const std::string& what,
                                TensorRTPhase phase = TensorRTPhase::kBUILD) {
        checkRefused(creator, "psla_test", f, parts, what, phase);
    };
    int32_t minusOne = -1;
    refusedAndLogged(Fields{{PluginField(kField, &minusOne, PluginFieldType::kINT32, 1)}}, {"max_disp", "-1", "range"},
                     "max_disp = -1");
    int32_t nine = 9;
    refusedAndLogged(Fields{{PluginField(kField, &nine, PluginFieldType::kINT32, 1)}}, {"max_disp", "9", "range"},
                     "max_disp = 9");
    float asFloat = 4.0F;
    refusedAndLogged(Fields{{PluginField(kField, &asFloat, PluginFieldType::kFLOAT32, 1)}},
                     {"max_disp", "kINT32", "kFLOAT32"}, "max_disp as kFLOAT32");
    int64_t asInt64 = 4;
    refusedAndLogged(Fields{{PluginField(kField, &asInt64, PluginFieldType::kINT64, 1)}},
                     {"max_disp", "kINT32", "kINT64"}, "max_disp as kINT64");
    int32_t pair[2] = {4, 4};
    refusedAndLogged(Fields{{PluginField(kField, pair, PluginFieldType::kINT32, 2)}}, {"max_disp", "length 2"},
                     "max_disp with two values");
    refusedAndLogged(Fields{{PluginField(kField, nullptr, PluginFieldType::kINT32, 1)}}, {"max_disp", "no data"},
                     "max_disp without data");
    refusedAndLogged(Fields{}, {"max_disp"}, "runtime fields without max_disp", TensorRTPhase::kRUNTIME);

    // Missing at build time: the documented default, with a warning.
    {
        const size_t mark = gLogger.size();
        Plugin p = create(creator, Fields{});
        CHECK(p && serializedMaxDisp(*p.runtime) == 4, "missing max_disp at build time defaults to 4");
        CHECK(gLogger.loggedSince(mark, Severity::kWARNING, {"max_disp"}), "the default is announced as a warning");
        Plugin q = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kBUILD));
        CHECK(q && serializedMaxDisp(*q.runtime) == 4, "a null field collection at build time uses the default");
    }

    // What the ONNX parser may forward besides max_disp.
    {
        int32_t md = 2;
        const char version[] = "1";
        const char ns[] = "vidtrt";
        float other = 1.5F;
        Fields f{{PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
                  PluginField(kField, &md, PluginFieldType::kINT32, 1),
                  PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 6),
                  PluginField("something_newer", &other, PluginFieldType::kFLOAT32, 1)}};
        const size_t mark = gLogger.size();
        Plugin p = create(creator, f);
        CHECK(p && serializedMaxDisp(*p.runtime) == 2, "unknown fields (plugin_version, ...) are ignored");
        CHECK(!gLogger.anySince(mark, Severity::kERROR), "unknown fields are not reported as errors");
    }
}

void testWithoutLogger(IPluginCreatorV3One& creator, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*)) {
    setLoggerFinder(nullptr);
    const size_t mark = gLogger.size();
    int32_t bad = 42;
    Plugin p = create(creator, Fields{{PluginField(kField, &bad, PluginFieldType::kINT32, 1)}});
    CHECK(!p.owner, "invalid max_disp is refused without a logger too");
    CHECK(gLogger.size() == mark, "nothing reaches a detached logger");
}


// ---------------------------------------------------------------- PSRoIAlign
//
// The same walk through the TensorRT interfaces for the second creator; the
// helpers above (dims, desc, wrap, Fields, FakeExprBuilder) are shared.

namespace psroi {

constexpr const char* kName = "PSRoIAlign";
constexpr const char* kOutputSize = "output_size";
constexpr const char* kSpatialScale = "spatial_scale";
constexpr const char* kSamplingRatio = "sampling_ratio";

struct Params {
    int32_t outputSize;
    float spatialScale;
    int32_t samplingRatio;
};

// Owns the values its fields point to, so a Params temporary cannot dangle.
struct ParamFields {
    explicit ParamFields(Params p) : values(p) {}
    Params values;
    Fields fields() const {
        return Fields{{PluginField(kOutputSize, &values.outputSize, PluginFieldType::kINT32, 1),
                       PluginField(kSpatialScale, &values.spatialScale, PluginFieldType::kFLOAT32, 1),
                       PluginField(kSamplingRatio, &values.samplingRatio, PluginFieldType::kINT32, 1)}};
    }
};

const Params kRfcn{7, 0.0625F, 2};  // R-FCN: 7x7 bins on a stride-16 map, 2x2 samples per bin

Plugin makePlugin(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return createLayer(creator, f, phase, "psroi_test");
}

Plugin makePlugin(IPluginCreatorV3One& creator, Params p, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    const ParamFields pf(p);
    return makePlugin(creator, pf.fields(), phase);
}

// The serialized fields, exactly {output_size: kINT32, spatial_scale: kFLOAT32,
// sampling_ratio: kINT32} in that order, or false.
bool serialized(IPluginV3OneRuntime& runtime, Params& out) {
    const PluginFieldCollection* fc = runtime.getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 3 || fc->fields == nullptr) return false;
    const std::pair<const char*, PluginFieldType> want[3] = {{kOutputSize, PluginFieldType::kINT32},
                                                             {kSpatialScale, PluginFieldType::kFLOAT32},
                                                             {kSamplingRatio, PluginFieldType::kINT32}};
    for (int32_t i = 0; i < 3; ++i) {
        const PluginField& f = fc->fields[i];
        if (f.name == nullptr || std::strcmp(f.name, want[i].first) != 0 || f.type != want[i].second ||
            f.length != 1 || f.data == nullptr) {
            return false;
        }
    }
    std::memcpy(&out.outputSize, fc->fields[0].data, sizeof(int32_t));
    std::memcpy(&out.spatialScale, fc->fields[1].data, sizeof(float));
    std::memcpy(&out.samplingRatio, fc->fields[2].data, sizeof(int32_t));
    return true;
}

bool serializedEquals(IPluginV3OneRuntime& runtime, Params want) {
    Params got{};
    return serialized(runtime, got) && got.outputSize == want.outputSize && got.spatialScale == want.spatialScale &&
           got.samplingRatio == want.samplingRatio;
}

const std::vector<Dims> kFormatShapes = {dims({1, 392, 38, 63}), dims({300, 5}), dims({300, 8, 7, 7})};

bool acceptsCombination(IPluginV3OneBuild& build, std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    return acceptsCombinationOf(build, kFormatShapes, 2, io);
}


void testCreatorIdentity(IPluginCreatorV3One& creator) {
    checkCreatorIdentity(creator, "PSRoIAlign", kName,
                         {{kOutputSize, PluginFieldType::kINT32},
                          {kSpatialScale, PluginFieldType::kFLOAT32},
                          {kSamplingRatio, PluginFieldType::kINT32}});
}

void testInterfaces(const Plugin& p) {
    checkInterfaces(p, "PSRoIAlign", kName);
    CHECK(p.build->getWorkspaceSize(nullptr, 0, nullptr, 0) == 0, "PSRoIAlign needs no workspace");
    const char* meta = p.build->getMetadataString();
    CHECK(meta != nullptr && contains(meta, "output_size=7") && contains(meta, "spatial_scale=0.0625") &&
              contains(meta, "sampling_ratio=2"),
          "metadata names all three attributes");
}

void testOutputTypes(IPluginV3OneBuild& build) {
    checkOutputTypes(build, "PSRoIAlign", 2, 3, {"PSRoIAlign", "features", "kBF16"});
}

void testFormats(IPluginV3OneBuild& build) {
    checkCommonFormats(build, "PSRoIAlign", kFormatShapes, 2, 3);
    using P = std::pair<DataType, TensorFormat>;
    const auto F32 = P{DataType::kFLOAT, TensorFormat::kLINEAR};
    const auto F16 = P{DataType::kHALF, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F16, F32, F16}), "PSRoIAlign: FP32 rois with FP16 features are refused");
    CHECK(!acceptsCombination(build, {F32, F16, F32}), "PSRoIAlign: FP16 rois with FP32 features are refused");
    const auto I32 = P{DataType::kINT32, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F32, I32, F32}), "PSRoIAlign: INT32 rois are refused");
    const auto F16x32 = P{DataType::kHALF, TensorFormat::kCHW32};
    CHECK(!acceptsCombination(build, {F16x32, F16, F16}), "PSRoIAlign: FP16 kCHW32 features are refused");
    const auto F16hwc8 = P{DataType::kHALF, TensorFormat::kHWC8};
    CHECK(!acceptsCombination(build, {F16hwc8, F16, F16}), "PSRoIAlign: FP16 kHWC8 features are refused");
    const auto F32hwc = P{DataType::kFLOAT, TensorFormat::kHWC};
    CHECK(!acceptsCombination(build, {F32, F32, F32hwc}), "PSRoIAlign: a kHWC output is refused");
}

void testOutputShapes(IPluginV3OneBuild& build) {
    FakeExprBuilder eb;
    DimsExprs out[1]{};
    DimsExprs in[2] = {eb.dims({2, 392, 38, 63}), eb.dims({300, 5})};
    CHECK(build.getOutputShapes(in, 2, nullptr, 0, out, 1, eb) == 0, "PSRoIAlign getOutputShapes on constants");
    CHECK(constantDims(out[0], {300, 8, 7, 7}), "output is [R, C*k*k / k^2, k, k] = [300, 8, 7, 7]");

    DimsExprs sym[2] = {eb.dims({-1, 392, -1, -1}), eb.dims({-1, 5})};
    CHECK(build.getOutputShapes(sym, 2, nullptr, 0, out, 1, eb) == 0, "PSRoIAlign getOutputShapes on symbols");
    CHECK(out[0].nbDims == 4 && out[0].d[0] == sym[1].d[0], "output R is the rois' R expression");
    CHECK(out[0].nbDims == 4 && out[0].d[1] != nullptr && out[0].d[1]->isConstant() &&
              out[0].d[1]->getConstantValue() == 8 && out[0].d[2]->getConstantValue() == 7 &&
              out[0].d[3]->getConstantValue() == 7,
          "C and k stay constant when only N, H, W and R are dynamic");

    DimsExprs symChannels[2] = {eb.dims({-1, -1, -1, -1}), eb.dims({-1, 5})};
    CHECK(build.getOutputShapes(symChannels, 2, nullptr, 0, out, 1, eb) == 0,
          "PSRoIAlign getOutputShapes with dynamic channels");
    CHECK(out[0].nbDims == 4 && out[0].d[1] != nullptr && !out[0].d[1]->isConstant(),
          "dynamic channels give a dynamic C (an expression, not a guess)");

    size_t mark = gLogger.size();
    DimsExprs badChannels[2] = {eb.dims({2, 391, 38, 63}), eb.dims({300, 5})};
    CHECK(build.getOutputShapes(badChannels, 2, nullptr, 0, out, 1, eb) != 0,
          "channels that are not a multiple of k^2 are refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"391", "49"}), "the channel count and k^2 are logged");

    mark = gLogger.size();
    DimsExprs badRois[2] = {eb.dims({2, 392, 38, 63}), eb.dims({300, 4})};
    CHECK(build.getOutputShapes(badRois, 2, nullptr, 0, out, 1, eb) != 0, "rois [R, 4] are refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"4 columns", "[R, 5]"}), "the rois width is logged");

    mark = gLogger.size();
    DimsExprs rank3[2] = {eb.dims({392, 38, 63}), eb.dims({300, 5})};
    CHECK(build.getOutputShapes(rank3, 2, nullptr, 0, out, 1, eb) != 0, "rank-3 features are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"features", "rank 3"}), "the features rank is logged");

    mark = gLogger.size();
    DimsExprs roisRank3[2] = {eb.dims({2, 392, 38, 63}), eb.dims({1, 300, 5})};
    CHECK(build.getOutputShapes(roisRank3, 2, nullptr, 0, out, 1, eb) != 0, "rank-3 rois are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"rois", "rank 3"}), "the rois rank is logged");
}

void testConfigure(IPluginV3OneBuild& build) {
    auto configure = [&](Dims f, Dims r, Dims o) {
        DynamicPluginTensorDesc in[2] = {dynDesc(f), dynDesc(r)};
        DynamicPluginTensorDesc out[1] = {dynDesc(o)};
        return build.configurePlugin(in, 2, out, 1);
    };
    const Dims f = dims({2, 392, 38, 63});
    const Dims r = dims({300, 5});
    const Dims o = dims({300, 8, 7, 7});
    CHECK(configure(f, r, o) == 0, "PSRoIAlign: consistent dims configure");
    CHECK(configure(dims({-1, 392, -1, -1}), dims({-1, 5}), dims({-1, 8, 7, 7})) == 0,
          "PSRoIAlign: build-time wildcards configure");
    CHECK(configure(f, dims({0, 5}), dims({0, 8, 7, 7})) == 0, "PSRoIAlign: an empty RoI set configures");

    size_t mark = gLogger.size();
    CHECK(configure(f, dims({300, 4}), o) != 0, "PSRoIAlign: rois [300, 4] are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"configurePlugin", "[300, 4]", "[R, 5]"}),
          "the rois shape is logged");

    mark = gLogger.size();
    CHECK(configure(dims({2, 390, 38, 63}), r, o) != 0, "PSRoIAlign: 390 channels with k = 7 are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"390", "49"}), "the channel count is logged");

    mark = gLogger.size();
    CHECK(configure(f, r, dims({300, 9, 7, 7})) != 0, "PSRoIAlign: an output with the wrong C is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"[300, 9, 7, 7]", "[300, 8, 7, 7]", "on C"}),
          "the output mismatch is logged with the expected shape");
    CHECK(configure(f, r, dims({299, 8, 7, 7})) != 0, "PSRoIAlign: an output with the wrong R is refused");
    CHECK(configure(f, r, dims({300, 8, 3, 3})) != 0, "PSRoIAlign: an output with the wrong k is refused");

    mark = gLogger.size();
    CHECK(configure(dims({2, 392, 0, 63}), r, o) != 0, "PSRoIAlign: an empty H is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"empty H"}), "the empty H is logged");

    mark = gLogger.size();
    CHECK(configure(dims({392, 38, 63}), r, o) != 0, "PSRoIAlign: rank-3 features are refused by configurePlugin");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"features", "rank 3"}), "the rank is logged");

    DynamicPluginTensorDesc in[3] = {dynDesc(f), dynDesc(r), dynDesc(r)};
    DynamicPluginTensorDesc out[1] = {dynDesc(o)};
    CHECK(build.configurePlugin(in, 3, out, 1) != 0, "PSRoIAlign: three inputs are refused by configurePlugin");
}

void testRuntime(IPluginV3OneRuntime& runtime) {
    auto shapeChange = [&](Dims f, Dims r, Dims o) {
        PluginTensorDesc in[2] = {desc(f), desc(r)};
        PluginTensorDesc out[1] = {desc(o)};
        return runtime.onShapeChange(in, 2, out, 1);
    };
    const Dims f = dims({2, 392, 38, 63});
    const Dims r = dims({300, 5});
    const Dims o = dims({300, 8, 7, 7});
    CHECK(shapeChange(f, r, o) == 0, "PSRoIAlign onShapeChange accepts consistent dims");
    size_t mark = gLogger.size();
    CHECK(shapeChange(f, dims({12, 5}), o) != 0, "PSRoIAlign onShapeChange refuses an R mismatch");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"onShapeChange", "on R"}), "the R mismatch is logged");
    CHECK(shapeChange(dims({-1, 392, 38, 63}), r, o) != 0, "PSRoIAlign onShapeChange refuses unresolved extents");

    auto enqueue = [&](Dims fd, Dims rd, Dims od, DataType ft, DataType rt, DataType ot) {
        PluginTensorDesc in[2] = {desc(fd, ft), desc(rd, rt)};
        PluginTensorDesc out[1] = {desc(od, ot)};
        const void* inputs[2] = {nullptr, nullptr};
        void* outputs[1] = {nullptr};
        return runtime.enqueue(in, out, inputs, outputs, nullptr, nullptr);
    };
    // No RoIs (or no output channels) pass validation and return before any
    // CUDA call, so these run the whole enqueue path without a device.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
        CHECK(enqueue(f, dims({0, 5}), dims({0, 8, 7, 7}), t, t, t) == 0, "enqueue of an empty RoI set succeeds");
    }
    CHECK(enqueue(dims({2, 0, 38, 63}), r, dims({300, 0, 7, 7}), DataType::kHALF, DataType::kHALF,
                  DataType::kHALF) == 0,
          "enqueue with no output channels succeeds");
    mark = gLogger.size();
    CHECK(enqueue(f, dims({0, 5}), dims({0, 8, 5, 5}), DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT) != 0,
          "enqueue refuses an output with the wrong k");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "[0, 8, 5, 5]"}), "the enqueue refusal is logged");
    mark = gLogger.size();
    CHECK(enqueue(f, dims({0, 5}), dims({0, 8, 7, 7}), DataType::kHALF, DataType::kFLOAT, DataType::kHALF) != 0,
          "enqueue refuses FP32 rois with FP16 features");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "kHALF", "kFLOAT"}), "the type mix is logged");
    CHECK(enqueue(f, dims({0, 5}), dims({0, 8, 7, 7}), DataType::kINT8, DataType::kINT8, DataType::kINT8) != 0,
          "PSRoIAlign enqueue refuses INT8");
}

void testSerializationAndClone(IPluginCreatorV3One& creator, Plugin& original) {
    CHECK(serializedEquals(*original.runtime, kRfcn),
          "getFieldsToSerialize holds output_size 7 (kINT32), spatial_scale 0.0625 (kFLOAT32), sampling_ratio 2");
    for (Params p : {Params{1, 1.0F, 1}, Params{3, 0.125F, 3}, Params{14, 0.03125F, 4}}) {
        Plugin q = makePlugin(creator, p);
        CHECK(q && serializedEquals(*q.runtime, p),
              "attribute round trip for output_size " + std::to_string(p.outputSize));
    }
    checkRestoreAndCopies(creator, original, "PSRoIAlign", kName,
                          [](Plugin& copy) { return serializedEquals(*copy.runtime, kRfcn); });
}

void testCreationErrors(IPluginCreatorV3One& creator) {
    auto refusedAndLogged = [&](const Fields& f, std::initializer_list<const char*> parts, const std::string& what,
                                TensorRTPhase phase = TensorRTPhase::kBUILD) {
        checkRefused(creator, "psroi_test", f, parts, "PSRoIAlign " + what, phase);
    };
    const ParamFields good(kRfcn);

    // Out of range.
    refusedAndLogged(ParamFields({0, 0.0625F, 2}).fields(), {"output_size", "0", "range"}, "output_size = 0");
    refusedAndLogged(ParamFields({-3, 0.0625F, 2}).fields(), {"output_size", "-3", "range"}, "output_size = -3");
    refusedAndLogged(ParamFields({7, 0.0625F, 0}).fields(), {"sampling_ratio", "0", "adaptive"}, "sampling_ratio = 0");
    refusedAndLogged(ParamFields({7, 0.0625F, -1}).fields(), {"sampling_ratio", "-1", "adaptive"},
                     "sampling_ratio = -1");
    refusedAndLogged(ParamFields({7, 0.0F, 2}).fields(), {"spatial_scale", "range"}, "spatial_scale = 0");
    refusedAndLogged(ParamFields({7, -0.5F, 2}).fields(), {"spatial_scale", "-0.5", "range"}, "spatial_scale = -0.5");
    refusedAndLogged(ParamFields({7, INFINITY, 2}).fields(), {"spatial_scale", "inf", "range"}, "spatial_scale = inf");
    refusedAndLogged(ParamFields({7, NAN, 2}).fields(), {"spatial_scale", "nan", "range"}, "spatial_scale = nan");

    // Wrong types, lengths, data.
    int64_t asInt64 = 7;
    refusedAndLogged(withField(good, 0, PluginField(kOutputSize, &asInt64, PluginFieldType::kINT64, 1)),
                     {"output_size", "kINT32", "kINT64"}, "output_size as kINT64");
    float asFloat = 7.0F;
    refusedAndLogged(withField(good, 0, PluginField(kOutputSize, &asFloat, PluginFieldType::kFLOAT32, 1)),
                     {"output_size", "kINT32", "kFLOAT32"}, "output_size as kFLOAT32");
    double asDouble = 0.0625;
    refusedAndLogged(withField(good, 1, PluginField(kSpatialScale, &asDouble, PluginFieldType::kFLOAT64, 1)),
                     {"spatial_scale", "kFLOAT32", "kFLOAT64"}, "spatial_scale as kFLOAT64");
    int32_t asInt = 1;
    refusedAndLogged(withField(good, 1, PluginField(kSpatialScale, &asInt, PluginFieldType::kINT32, 1)),
                     {"spatial_scale", "kFLOAT32", "kINT32"}, "spatial_scale as kINT32");
    refusedAndLogged(withField(good, 2, PluginField(kSamplingRatio, &asFloat, PluginFieldType::kFLOAT32, 1)),
                     {"sampling_ratio", "kINT32", "kFLOAT32"}, "sampling_ratio as kFLOAT32");
    float pair[2] = {0.0625F, 0.0625F};
    refusedAndLogged(withField(good, 1, PluginField(kSpatialScale, pair, PluginFieldType::kFLOAT32, 2)),
                     {"spatial_scale", "length 2"}, "spatial_scale with two values");
    refusedAndLogged(withField(good, 2, PluginField(kSamplingRatio, nullptr, PluginFieldType::kINT32, 1)),
                     {"sampling_ratio", "no data"}, "sampling_ratio without data");

    // Missing: no default in either phase.
    const char* names[3] = {kOutputSize, kSpatialScale, kSamplingRatio};
    for (size_t i = 0; i < 3; ++i) {
        for (TensorRTPhase phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME}) {
            refusedAndLogged(without(good, i), {names[i], "missing"},
                             std::string("missing ") + names[i] +
                                 (phase == TensorRTPhase::kBUILD ? " at build time" : " at run time"),
                             phase);
        }
    }
    {
        const size_t mark = gLogger.size();
        Plugin p = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kBUILD));
        CHECK(!p.owner, "PSRoIAlign: a null field collection is refused");
        CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"no_fields", "missing"}),
              "the refusal names the layer and the missing field");
    }

    // What the ONNX parser may forward besides the three attributes, in any order.
    {
        const ParamFields p({3, 0.125F, 1});
        const char version[] = "1";
        const char ns[] = "vidtrt";
        float other = 1.5F;
        Fields f = p.fields();
        f.fields.insert(f.fields.begin(), PluginField("plugin_version", version, PluginFieldType::kCHAR, 1));
        f.fields.push_back(PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 6));
        f.fields.push_back(PluginField("something_newer", &other, PluginFieldType::kFLOAT32, 1));
        std::swap(f.fields[1], f.fields[3]);
        const size_t mark = gLogger.size();
        Plugin q = makePlugin(creator, f);
        CHECK(q && serializedEquals(*q.runtime, p.values), "PSRoIAlign: unknown fields are ignored, order is free");
        CHECK(!gLogger.anySince(mark, Severity::kERROR), "PSRoIAlign: unknown fields are not reported as errors");
    }
}

void testWithoutLogger(IPluginCreatorV3One& creator, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*),
                       nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(nullptr);
    const size_t mark = gLogger.size();
    Plugin p = makePlugin(creator, Params{0, 0.0625F, 2});
    CHECK(!p.owner, "invalid output_size is refused without a logger too");
    CHECK(gLogger.size() == mark, "nothing from PSRoIAlign reaches a detached logger");
    setLoggerFinder(finder);
}

void run(IPluginCreatorV3One& creator, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*),
         nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(finder);  // the PSLA checks end with it detached
    psroi::testCreatorIdentity(creator);
    Plugin plugin = makePlugin(creator, kRfcn);
    if (!plugin) fatal("createPlugin(output_size=7, spatial_scale=1/16, sampling_ratio=2, kBUILD) failed");
    psroi::testInterfaces(plugin);
    psroi::testOutputTypes(*plugin.build);
    psroi::testFormats(*plugin.build);
    psroi::testOutputShapes(*plugin.build);
    psroi::testConfigure(*plugin.build);
    psroi::testRuntime(*plugin.runtime);
    psroi::testSerializationAndClone(creator, plugin);
    psroi::testCreationErrors(creator);
    psroi::testWithoutLogger(creator, setLoggerFinder, finder);
}

}  // namespace psroi

// ---------------------------------------------------------------- MostSimilarRoIAlign
//
// The same walk through the TensorRT interfaces for the MS RoI Align creator,
// plus its workspace (the only plugin here that asks for one); the helpers at
// the top (dims, desc, dynDesc, wrap, Fields, FakeExprBuilder) are shared.

namespace msra {

constexpr const char* kName = "MostSimilarRoIAlign";
constexpr const char* kField = "top_k";
constexpr int32_t kTopK = 2;  // mmtracking's num_most_similar_points
constexpr int32_t kMaxTopK = 8;

// The paper's scale: 300 RoIs of 7x7 cells, 512 channels, 14 support frames of 38x63.
const Dims kRoi = dims({300, 512, 7, 7});
const Dims kSupport = dims({14, 512, 38, 63});
const Dims kOut = dims({14, 300, 512, 7, 7});

Plugin makePlugin(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return createLayer(creator, f, phase, "msra_test");
}

Plugin makePlugin(IPluginCreatorV3One& creator, int32_t& topK, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return makePlugin(creator, Fields{{PluginField(kField, &topK, PluginFieldType::kINT32, 1)}}, phase);
}

int32_t serializedTopK(IPluginV3OneRuntime& runtime) { return serializedInt32(runtime, kField); }

bool acceptsCombination(IPluginV3OneBuild& build, std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    return acceptsCombinationOf(build, {kRoi, kSupport, kOut}, 2, io);
}


// What the kernel library's workspace_bytes promises, written out from the
// layout in most_similar_roi_align_kernel.h: FP32 support panels of 16 cells
// ([T][ceil(H*W/16)][C][16]) and FP32 queries ([R*h*w][C]).
size_t expectedWorkspace(int64_t r, int64_t c, int64_t h, int64_t w, int64_t t, int64_t hh, int64_t ww) {
    const int64_t panels = (hh * ww + 15) / 16;
    return static_cast<size_t>(t * panels * c * 16 + r * h * w * c) * sizeof(float);
}

void testCreatorIdentity(IPluginCreatorV3One& creator) {
    checkCreatorIdentity(creator, "MSRA", kName, {{kField, PluginFieldType::kINT32}});
}

void testInterfaces(const Plugin& p) {
    checkInterfaces(p, "MSRA", kName);
    const char* meta = p.build->getMetadataString();
    CHECK(meta != nullptr && contains(meta, "top_k=2"), "MSRA metadata names top_k");
}

void testWorkspace(IPluginV3OneBuild& build) {
    DynamicPluginTensorDesc in[2] = {dynDesc(kRoi), dynDesc(kSupport)};
    DynamicPluginTensorDesc out[1] = {dynDesc(kOut)};
    const size_t paper = expectedWorkspace(300, 512, 7, 7, 14, 38, 63);
    CHECK(build.getWorkspaceSize(in, 2, out, 1) == paper,
          "MSRA workspace at the paper's scale is the normalised support panels plus queries (" +
              std::to_string(paper) + " bytes)");
    // A profile: the workspace follows its largest shapes, not opt or min.
    in[0].min = dims({1, 512, 7, 7});
    in[0].opt = dims({100, 512, 7, 7});
    in[0].max = dims({600, 512, 7, 7});
    in[1].min = dims({1, 512, 20, 20});
    in[1].opt = dims({8, 512, 38, 63});
    in[1].max = dims({28, 512, 64, 100});
    in[0].desc.dims = dims({-1, 512, 7, 7});
    in[1].desc.dims = dims({-1, 512, -1, -1});
    CHECK(build.getWorkspaceSize(in, 2, out, 1) == expectedWorkspace(600, 512, 7, 7, 28, 64, 100),
          "MSRA workspace is sized from the profile's max shapes");
    // One support cell more than a whole number of panels costs a whole panel per frame.
    DynamicPluginTensorDesc odd[2] = {dynDesc(dims({1, 4, 1, 1})), dynDesc(dims({3, 4, 1, 17}))};
    CHECK(build.getWorkspaceSize(odd, 2, out, 1) == expectedWorkspace(1, 4, 1, 1, 3, 1, 17) &&
              expectedWorkspace(1, 4, 1, 1, 3, 1, 17) == (3 * 2 * 4 * 16 + 4) * sizeof(float),
          "MSRA workspace rounds each frame up to whole 16-cell panels");
    CHECK(build.getWorkspaceSize(nullptr, 0, nullptr, 0) == 0, "MSRA workspace of no inputs is 0");
}

void testOutputTypes(IPluginV3OneBuild& build) {
    checkOutputTypes(build, "MSRA", 2, 3, {"MostSimilarRoIAlign", "support_feats", "kBF16"});
}

void testFormats(IPluginV3OneBuild& build) {
    checkCommonFormats(build, "MSRA", {kRoi, kSupport, kOut}, 2, 3);
    using P = std::pair<DataType, TensorFormat>;
    const auto F32 = P{DataType::kFLOAT, TensorFormat::kLINEAR};
    const auto F16 = P{DataType::kHALF, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F16, F32, F16}), "MSRA: FP32 support with FP16 RoIs is refused");
    CHECK(!acceptsCombination(build, {F32, F16, F32}), "MSRA: FP16 support with FP32 RoIs is refused");
    const auto F16x32 = P{DataType::kHALF, TensorFormat::kCHW32};
    CHECK(!acceptsCombination(build, {F16, F16x32, F16}), "MSRA: FP16 kCHW32 support is refused");
    const auto F16hwc8 = P{DataType::kHALF, TensorFormat::kHWC8};
    CHECK(!acceptsCombination(build, {F16hwc8, F16, F16}), "MSRA: FP16 kHWC8 RoIs are refused");
}

void testOutputShapes(IPluginV3OneBuild& build) {
    FakeExprBuilder eb;
    DimsExprs out[1]{};
    DimsExprs in[2] = {eb.dims({300, 512, 7, 7}), eb.dims({14, 512, 38, 63})};
    CHECK(build.getOutputShapes(in, 2, nullptr, 0, out, 1, eb) == 0, "MSRA getOutputShapes on constants");
    CHECK(constantDims(out[0], {14, 300, 512, 7, 7}), "MSRA output is [T, R, C, h, w] = [14, 300, 512, 7, 7]");

    DimsExprs sym[2] = {eb.dims({-1, 512, 7, 7}), eb.dims({-1, 512, -1, -1})};
    CHECK(build.getOutputShapes(sym, 2, nullptr, 0, out, 1, eb) == 0, "MSRA getOutputShapes on symbols");
    CHECK(out[0].nbDims == 5 && out[0].d[0] == sym[1].d[0] && out[0].d[1] == sym[0].d[0],
          "MSRA output T and R are the inputs' T and R expressions");
    CHECK(out[0].nbDims == 5 && out[0].d[2] == sym[0].d[1] && out[0].d[3] == sym[0].d[2] && out[0].d[4] == sym[0].d[3],
          "MSRA output C, h, w are the RoI features' expressions");

    size_t mark = gLogger.size();
    DimsExprs badC[2] = {eb.dims({300, 256, 7, 7}), eb.dims({14, 512, 38, 63})};
    CHECK(build.getOutputShapes(badC, 2, nullptr, 0, out, 1, eb) != 0, "MSRA: different constant C is refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"disagree on C", "256", "512"}), "both channel counts are logged");

    mark = gLogger.size();
    DimsExprs tiny[2] = {eb.dims({300, 512, 7, 7}), eb.dims({14, 512, 1, 1})};
    CHECK(build.getOutputShapes(tiny, 2, nullptr, 0, out, 1, eb) != 0, "MSRA: a 1x1 support map with top_k 2 is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"H*W = 1", "top_k = 2"}), "the cell count and top_k are logged");

    mark = gLogger.size();
    DimsExprs rank3[2] = {eb.dims({512, 7, 7}), eb.dims({14, 512, 38, 63})};
    CHECK(build.getOutputShapes(rank3, 2, nullptr, 0, out, 1, eb) != 0, "MSRA: rank-3 RoI features are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"roi_feats", "rank 3"}), "the RoI rank is logged");

    mark = gLogger.size();
    DimsExprs rank5[2] = {eb.dims({300, 512, 7, 7}), eb.dims({1, 14, 512, 38, 63})};
    CHECK(build.getOutputShapes(rank5, 2, nullptr, 0, out, 1, eb) != 0, "MSRA: rank-5 support features are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"support_feats", "rank 5"}), "the support rank is logged");
}

void testConfigure(IPluginV3OneBuild& build) {
    auto configure = [&](Dims r, Dims s, Dims o) {
        DynamicPluginTensorDesc in[2] = {dynDesc(r), dynDesc(s)};
        DynamicPluginTensorDesc out[1] = {dynDesc(o)};
        return build.configurePlugin(in, 2, out, 1);
    };
    CHECK(configure(kRoi, kSupport, kOut) == 0, "MSRA: consistent dims configure");
    CHECK(configure(kRoi, dims({14, 512, 1, 2}), kOut) == 0, "MSRA: a 1x2 support map holds top_k = 2 cells");
    CHECK(configure(dims({0, 512, 7, 7}), kSupport, dims({14, 0, 512, 7, 7})) == 0, "MSRA: an empty RoI set configures");

    size_t mark = gLogger.size();
    CHECK(configure(dims({-1, 512, 7, 7}), dims({-1, 512, -1, -1}), dims({-1, -1, 512, 7, 7})) == 0,
          "MSRA: build-time wildcards configure");
    CHECK(gLogger.loggedSince(mark, Severity::kWARNING, {"profile admits", "H*W = 1", "top_k = 2"}),
          "a profile that admits maps smaller than top_k is warned about");

    mark = gLogger.size();
    CHECK(configure(kRoi, dims({14, 256, 38, 63}), kOut) != 0, "MSRA: C mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"configurePlugin", "disagree on C"}), "the C mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(kRoi, kSupport, dims({13, 300, 512, 7, 7})) != 0, "MSRA: an output with the wrong T is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"configurePlugin", "[13, 300, 512, 7, 7]", "on T"}),
          "the output mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(kRoi, dims({14, 512, 1, 1}), kOut) != 0, "MSRA: a 1x1 support map is refused at build time");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"configurePlugin", "fewer than top_k"}), "the reason is logged");

    mark = gLogger.size();
    CHECK(configure(kRoi, kSupport, dims({14, 300, 512, 49})) != 0, "MSRA: a rank-4 output is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"output", "rank 4"}), "the output rank is logged");
    DynamicPluginTensorDesc in[3] = {dynDesc(kRoi), dynDesc(kSupport), dynDesc(kSupport)};
    DynamicPluginTensorDesc out[1] = {dynDesc(kOut)};
    CHECK(build.configurePlugin(in, 3, out, 1) != 0, "MSRA: three inputs are refused by configurePlugin");
}

void testRuntime(IPluginV3OneRuntime& runtime) {
    auto shapeChange = [&](Dims r, Dims s, Dims o) {
        PluginTensorDesc in[2] = {desc(r), desc(s)};
        PluginTensorDesc out[1] = {desc(o)};
        return runtime.onShapeChange(in, 2, out, 1);
    };
    CHECK(shapeChange(kRoi, kSupport, kOut) == 0, "MSRA onShapeChange accepts consistent dims");
    size_t mark = gLogger.size();
    CHECK(shapeChange(dims({12, 512, 7, 7}), kSupport, kOut) != 0, "MSRA onShapeChange refuses an R mismatch");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"onShapeChange", "on R"}), "the R mismatch is logged");
    CHECK(shapeChange(dims({-1, 512, 7, 7}), kSupport, kOut) != 0, "MSRA onShapeChange refuses unresolved extents");
    mark = gLogger.size();
    CHECK(shapeChange(kRoi, dims({14, 512, 1, 1}), kOut) != 0, "MSRA onShapeChange refuses H*W < top_k");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"onShapeChange", "H*W = 1"}), "the small map is logged");

    auto enqueue = [&](Dims rd, Dims sd, Dims od, DataType rt, DataType st, DataType ot) {
        PluginTensorDesc in[2] = {desc(rd, rt), desc(sd, st)};
        PluginTensorDesc out[1] = {desc(od, ot)};
        const void* inputs[2] = {nullptr, nullptr};
        void* outputs[1] = {nullptr};
        return runtime.enqueue(in, out, inputs, outputs, nullptr, nullptr);
    };
    // Empty problems pass validation and return before any CUDA call (and
    // need no workspace), so these run the whole enqueue path without a device.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
        CHECK(enqueue(dims({0, 512, 7, 7}), kSupport, dims({14, 0, 512, 7, 7}), t, t, t) == 0,
              "MSRA enqueue of an empty RoI set succeeds");
    }
    CHECK(enqueue(kRoi, dims({0, 512, 38, 63}), dims({0, 300, 512, 7, 7}), DataType::kFLOAT, DataType::kFLOAT,
                  DataType::kFLOAT) == 0,
          "MSRA enqueue with no support frames succeeds");
    CHECK(enqueue(dims({300, 0, 7, 7}), dims({14, 0, 38, 63}), dims({14, 300, 0, 7, 7}), DataType::kHALF,
                  DataType::kHALF, DataType::kHALF) == 0,
          "MSRA enqueue with no channels succeeds");
    // A real problem without the workspace it asked for is refused before any
    // CUDA call (the kernel library checks the pointer first).
    mark = gLogger.size();
    CHECK(enqueue(kRoi, kSupport, kOut, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT) != 0,
          "MSRA enqueue without a workspace is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "invalid argument", "no workspace"}),
          "the missing workspace is logged");
    mark = gLogger.size();
    CHECK(enqueue(dims({0, 512, 7, 7}), kSupport, dims({14, 0, 512, 5, 5}), DataType::kFLOAT, DataType::kFLOAT,
                  DataType::kFLOAT) != 0,
          "MSRA enqueue refuses an output with the wrong h, w");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "[14, 0, 512, 5, 5]"}), "the refusal is logged");
    mark = gLogger.size();
    CHECK(enqueue(dims({0, 512, 7, 7}), kSupport, dims({14, 0, 512, 7, 7}), DataType::kHALF, DataType::kFLOAT,
                  DataType::kHALF) != 0,
          "MSRA enqueue refuses FP32 support with FP16 RoIs");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "kHALF", "kFLOAT"}), "the type mix is logged");
    CHECK(enqueue(dims({0, 512, 7, 7}), kSupport, dims({14, 0, 512, 7, 7}), DataType::kINT8, DataType::kINT8,
                  DataType::kINT8) != 0,
          "MSRA enqueue refuses INT8");
}

void testSerializationAndClone(IPluginCreatorV3One& creator, Plugin& original) {
    CHECK(serializedTopK(*original.runtime) == kTopK, "MSRA getFieldsToSerialize holds top_k = 2 as kINT32");
    for (int32_t k = 1; k <= kMaxTopK; ++k) {
        int32_t value = k;
        Plugin q = makePlugin(creator, value);
        CHECK(q && serializedTopK(*q.runtime) == k, "MSRA top_k round trip for " + std::to_string(k));
    }
    checkRestoreAndCopies(creator, original, "MSRA", kName, [](Plugin& copy) {
        return serializedTopK(*copy.runtime) == kTopK && contains(copy.build->getMetadataString(), "top_k=2");
    });
}

void testCreationErrors(IPluginCreatorV3One& creator) {
    auto refusedAndLogged = [&](const Fields& f, std::initializer_list<const char*> parts, const std::string& what,
                                TensorRTPhase phase = TensorRTPhase::kBUILD) {
        checkRefused(creator, "msra_test", f, parts, "MSRA " + what, phase);
    };
    for (int32_t bad : {0, -1, kMaxTopK + 1, 1000}) {
        int32_t value = bad;
        const std::string text = std::to_string(bad);
        refusedAndLogged(Fields{{PluginField(kField, &value, PluginFieldType::kINT32, 1)}},
                         {"top_k", text.c_str(), "out of range [1, 8]"}, "top_k = " + text);
    }
    int64_t asInt64 = 2;
    refusedAndLogged(Fields{{PluginField(kField, &asInt64, PluginFieldType::kINT64, 1)}}, {"top_k", "kINT32", "kINT64"},
                     "top_k as kINT64");
    float asFloat = 2.0F;
    refusedAndLogged(Fields{{PluginField(kField, &asFloat, PluginFieldType::kFLOAT32, 1)}},
                     {"top_k", "kINT32", "kFLOAT32"}, "top_k as kFLOAT32");
    int32_t pair[2] = {2, 2};
    refusedAndLogged(Fields{{PluginField(kField, pair, PluginFieldType::kINT32, 2)}}, {"top_k", "length 2"},
                     "top_k with two values");
    refusedAndLogged(Fields{{PluginField(kField, nullptr, PluginFieldType::kINT32, 1)}}, {"top_k", "no data"},
                     "top_k without data");
    // Required in both phases: no default value of K is right for every model.
    refusedAndLogged(Fields{}, {"top_k", "missing"}, "missing top_k at build time");
    refusedAndLogged(Fields{}, {"top_k", "missing"}, "missing top_k at run time", TensorRTPhase::kRUNTIME);
    {
        const size_t mark = gLogger.size();
        Plugin p = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kBUILD));
        CHECK(!p.owner, "MSRA: a null field collection is refused");
        CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"no_fields", "missing"}),
              "the refusal names the layer and the missing field");
    }
    // What the ONNX parser may forward besides top_k, in any order.
    {
        int32_t value = 4;
        const char version[] = "1";
        const char ns[] = "vidtrt";
        float other = 1.5F;
        Fields f{{PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
                  PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 6),
                  PluginField(kField, &value, PluginFieldType::kINT32, 1),
                  PluginField("something_newer", &other, PluginFieldType::kFLOAT32, 1)}};
        const size_t mark = gLogger.size();
        Plugin q = makePlugin(creator, f);
        CHECK(q && serializedTopK(*q.runtime) == 4, "MSRA: unknown fields are ignored, order is free");
        CHECK(!gLogger.anySince(mark, Severity::kERROR), "MSRA: unknown fields are not reported as errors");
    }
}

void testWithoutLogger(IPluginCreatorV3One& creator, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*),
                       nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(nullptr);
    const size_t mark = gLogger.size();
    int32_t bad = 0;
    Plugin p = makePlugin(creator, bad);
    CHECK(!p.owner, "invalid top_k is refused without a logger too");
    CHECK(gLogger.size() == mark, "nothing from MSRA reaches a detached logger");
    setLoggerFinder(finder);
}

// Finds the creator among getCreators' table itself, so main() needs one line.
void run(IPluginCreatorInterface* const* creators, int32_t nbCreators,
         void (*setLoggerFinder)(nvinfer1::ILoggerFinder*), nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(finder);
    IPluginCreatorV3One* creator = &findCreator(creators, nbCreators, kName);
    msra::testCreatorIdentity(*creator);
    int32_t topK = kTopK;
    Plugin plugin = makePlugin(*creator, topK);
    if (!plugin) fatal("createPlugin(top_k=2, kBUILD) did not return a plugin with all capabilities");
    msra::testInterfaces(plugin);
    msra::testWorkspace(*plugin.build);
    msra::testOutputTypes(*plugin.build);
    msra::testFormats(*plugin.build);
    msra::testOutputShapes(*plugin.build);
    msra::testConfigure(*plugin.build);
    msra::testRuntime(*plugin.runtime);
    msra::testSerializationAndClone(*creator, plugin);
    msra::testCreationErrors(*creator);
    msra::testWithoutLogger(*creator, setLoggerFinder, finder);
}

}  // namespace msra

// ---------------------------------------------------------------- RelationPropagation
//
// The same walk through the TensorRT interfaces for the relation propagation
// creator: no fields, four inputs (valid in the same type as the others) and
// a workspace that grows with N² (A is formed on the device). The helpers at
// the top (dims, desc, dynDesc, wrap, Fields, FakeExprBuilder) are shared.

namespace relprop {

constexpr const char* kName = "RelationPropagation";

// MFSA's inference batch: 21 frames × 300 proposals, d = 256, D = 1024.
const Dims kSigma = dims({6300, 256});
const Dims kRegions = dims({6300, 1024});
const Dims kValid = dims({6300});

Plugin makePlugin(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return createLayer(creator, f, phase, "relprop_test");
}

bool sameIdentity(const IPluginV3OneCore& core) { return hasIdentity(core, kName); }

// The serialized collection is present and empty.
bool serializesNothing(IPluginV3OneRuntime& runtime) {
    const PluginFieldCollection* fc = runtime.getFieldsToSerialize();
    return fc != nullptr && fc->nbFields == 0;
}

const std::vector<Dims> kFormatShapes = {dims({40, 8}), dims({40, 8}), dims({40, 16}), dims({40}), dims({40, 16})};

bool acceptsCombination(IPluginV3OneBuild& build, std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    return acceptsCombinationOf(build, kFormatShapes, 4, io);
}

// Floats of the device workspace, written out independently of the plugin:
// inv_sigma, inv_phi, A·1, A·(A·1) + A·1 (N each), A (N²), Y = A·R (N·D),
// each rounded up to 64 floats (256 bytes).
size_t expectedWorkspace(int64_t n, int64_t d) {
    auto up = [](int64_t x) { return (x + 63) / 64 * 64; };
    return static_cast<size_t>(4 * up(n) + up(n * n) + up(n * d)) * sizeof(float);
}

void testCreatorIdentity(IPluginCreatorV3One& creator) {
    checkCreatorIdentity(creator, "RelationPropagation", kName, {});
}

void testInterfaces(const Plugin& p) {
    checkInterfaces(p, "RelationPropagation", kName);
    CHECK(p.build->getMetadataString() != nullptr, "RelationPropagation metadata is a string");
}

void testWorkspace(IPluginV3OneBuild& build) {
    auto workspace = [&](Dims sigmaMax, Dims regionsMax) {
        // min and opt are small on purpose: only the profile's maximum counts.
        DynamicPluginTensorDesc in[4] = {dynDesc(dims({-1, 256})), dynDesc(dims({-1, 256})),
                                         dynDesc(dims({-1, 1024})), dynDesc(dims({-1}))};
        in[0].max = sigmaMax;
        in[1].max = sigmaMax;
        in[2].max = regionsMax;
        in[3].max = dims({sigmaMax.d[0]});
        DynamicPluginTensorDesc out[1] = {dynDesc(dims({-1, 1024}))};
        out[0].max = regionsMax;
        return build.getWorkspaceSize(in, 4, out, 1);
    };
    const size_t paper = workspace(kSigma, kRegions);
    CHECK(paper == expectedWorkspace(6300, 1024), "workspace at 6300 regions holds A (N²), A·R (N·D) and four N vectors");
    CHECK(paper >= size_t(6300) * 6300 * 4 + size_t(6300) * 1024 * 4, "the workspace covers A and A·R in FP32");
    CHECK(workspace(dims({300, 256}), dims({300, 1024})) == expectedWorkspace(300, 1024), "workspace at 300 regions");
    CHECK(workspace(dims({6300, 256}), dims({6300, 2048})) > paper, "the workspace grows with D");
    CHECK(workspace(dims({0, 256}), dims({0, 1024})) == 0, "an empty profile needs no workspace");
    CHECK(build.getWorkspaceSize(nullptr, 0, nullptr, 0) == 0, "no descriptors, no workspace");
}

void testOutputTypes(IPluginV3OneBuild& build) {
    checkOutputTypes(build, "RelationPropagation", 4, 3, {"RelationPropagation", "regions", "kBF16"});
}

void testFormats(IPluginV3OneBuild& build) {
    checkCommonFormats(build, "RelationPropagation", kFormatShapes, 4, 3);
    using P = std::pair<DataType, TensorFormat>;
    const auto F32 = P{DataType::kFLOAT, TensorFormat::kLINEAR};
    const auto F16 = P{DataType::kHALF, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F32, F16, F32, F32, F32}), "RelationPropagation: FP16 phi among FP32 is refused");
    CHECK(!acceptsCombination(build, {F16, F16, F32, F16, F16}), "RelationPropagation: FP32 regions among FP16 is refused");
    CHECK(!acceptsCombination(build, {F32, F32, F32, F16, F32}), "RelationPropagation: FP16 valid with FP32 data is refused");
    const auto B = P{DataType::kBOOL, TensorFormat::kLINEAR};
    CHECK(!acceptsCombination(build, {F32, F32, F32, B, F32}), "RelationPropagation: a kBOOL valid is refused");
    const auto F16x32 = P{DataType::kHALF, TensorFormat::kCHW32};
    CHECK(!acceptsCombination(build, {F16, F16, F16x32, F16, F16}), "RelationPropagation: a kCHW32 tensor is refused");
}

void testOutputShapes(IPluginV3OneBuild& build) {
    FakeExprBuilder eb;
    DimsExprs out[1]{};
    DimsExprs in[4] = {eb.dims({300, 64}), eb.dims({300, 64}), eb.dims({300, 256}), eb.dims({300})};
    CHECK(build.getOutputShapes(in, 4, nullptr, 0, out, 1, eb) == 0, "RelationPropagation getOutputShapes on constants");
    CHECK(out[0].nbDims == 2 && out[0].d[0]->isConstant() && out[0].d[0]->getConstantValue() == 300 &&
              out[0].d[1]->isConstant() && out[0].d[1]->getConstantValue() == 256,
          "output shape is regions' shape [300, 256]");

    DimsExprs sym[4] = {eb.dims({-1, 64}), eb.dims({-1, 64}), eb.dims({-1, -1}), eb.dims({-1})};
    CHECK(build.getOutputShapes(sym, 4, nullptr, 0, out, 1, eb) == 0, "RelationPropagation getOutputShapes on symbols");
    CHECK(out[0].nbDims == 2 && out[0].d[0] == sym[2].d[0] && out[0].d[1] == sym[2].d[1],
          "symbolic output dims are regions' expressions");

    size_t mark = gLogger.size();
    DimsExprs badN[4] = {eb.dims({300, 64}), eb.dims({300, 64}), eb.dims({300, 256}), eb.dims({299})};
    CHECK(build.getOutputShapes(badN, 4, nullptr, 0, out, 1, eb) != 0, "a constant N mismatch is refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"valid", "N", "300", "299"}), "the N mismatch is logged");

    mark = gLogger.size();
    DimsExprs badD[4] = {eb.dims({300, 64}), eb.dims({300, 32}), eb.dims({300, 256}), eb.dims({300})};
    CHECK(build.getOutputShapes(badD, 4, nullptr, 0, out, 1, eb) != 0, "a constant d mismatch is refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"phi", "d", "64", "32"}), "the d mismatch is logged");

    mark = gLogger.size();
    DimsExprs rank[4] = {eb.dims({300, 64}), eb.dims({300, 64}), eb.dims({300, 256}), eb.dims({300, 1})};
    CHECK(build.getOutputShapes(rank, 4, nullptr, 0, out, 1, eb) != 0, "a rank-2 valid is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"valid", "rank 2"}), "the rank is logged");
}

void testConfigure(IPluginV3OneBuild& build) {
    auto configure = [&](Dims s, Dims p, Dims r, Dims v, Dims o) {
        DynamicPluginTensorDesc in[4] = {dynDesc(s), dynDesc(p), dynDesc(r), dynDesc(v)};
        DynamicPluginTensorDesc out[1] = {dynDesc(o)};
        return build.configurePlugin(in, 4, out, 1);
    };
    CHECK(configure(kSigma, kSigma, kRegions, kValid, kRegions) == 0, "RelationPropagation: consistent dims configure");
    CHECK(configure(dims({-1, 256}), dims({-1, 256}), dims({-1, 1024}), dims({-1}), dims({-1, 1024})) == 0,
          "RelationPropagation: build-time wildcards configure");

    size_t mark = gLogger.size();
    CHECK(configure(kSigma, kSigma, dims({6299, 1024}), kValid, dims({6299, 1024})) != 0,
          "RelationPropagation: an N mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"N", "[6300, 256]", "[6299, 1024]"}),
          "the N mismatch is logged with both shapes");

    mark = gLogger.size();
    CHECK(configure(kSigma, dims({6300, 128}), kRegions, kValid, kRegions) != 0, "RelationPropagation: a d mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"disagree on d", "[6300, 128]"}), "the d mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(dims({6300, 0}), dims({6300, 0}), kRegions, kValid, kRegions) != 0, "RelationPropagation: d = 0 is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"d = 0"}), "the empty embedding is logged");

    mark = gLogger.size();
    CHECK(configure(kSigma, kSigma, dims({6300, 1024, 1}), kValid, kRegions) != 0, "RelationPropagation: rank-3 regions are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"regions", "rank 3"}), "the rank is logged");

    mark = gLogger.size();
    CHECK(configure(kSigma, kSigma, kRegions, kValid, dims({6300, 512})) != 0,
          "RelationPropagation: an output that is not regions' shape is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"output", "on D"}), "the output mismatch is logged");

    DynamicPluginTensorDesc in[3] = {dynDesc(kSigma), dynDesc(kSigma), dynDesc(kRegions)};
    DynamicPluginTensorDesc out[1] = {dynDesc(kRegions)};
    CHECK(build.configurePlugin(in, 3, out, 1) != 0, "RelationPropagation: three inputs are refused by configurePlugin");
}

void testRuntime(IPluginV3OneRuntime& runtime) {
    auto shapeChange = [&](Dims s, Dims r, Dims v, Dims o) {
        PluginTensorDesc in[4] = {desc(s), desc(s), desc(r), desc(v)};
        PluginTensorDesc out[1] = {desc(o)};
        return runtime.onShapeChange(in, 4, out, 1);
    };
    CHECK(shapeChange(kSigma, kRegions, kValid, kRegions) == 0, "RelationPropagation onShapeChange accepts consistent dims");
    size_t mark = gLogger.size();
    CHECK(shapeChange(kSigma, kRegions, dims({12}), kRegions) != 0, "RelationPropagation onShapeChange refuses an N mismatch");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"onShapeChange", "valid", "[12]"}), "the N mismatch is logged");
    CHECK(shapeChange(dims({-1, 256}), kRegions, kValid, kRegions) != 0,
          "RelationPropagation onShapeChange refuses unresolved extents");

    auto enqueue = [&](Dims s, Dims r, Dims v, Dims o, DataType t, DataType validType, void* workspace) {
        PluginTensorDesc in[4] = {desc(s, t), desc(s, t), desc(r, t), desc(v, validType)};
        PluginTensorDesc out[1] = {desc(o, t)};
        const void* inputs[4] = {nullptr, nullptr, nullptr, nullptr};
        void* outputs[1] = {nullptr};
        return runtime.enqueue(in, out, inputs, outputs, workspace, nullptr);
    };
    // Empty batches (N = 0) and empty features (D = 0) return before any CUDA
    // call, so these run the whole enqueue path without a device.
    for (DataType t : {DataType::kFLOAT, DataType::kHALF}) {
        CHECK(enqueue(dims({0, 256}), dims({0, 1024}), dims({0}), dims({0, 1024}), t, t, nullptr) == 0,
              "RelationPropagation enqueue of an empty batch succeeds");
        CHECK(enqueue(kSigma, dims({6300, 0}), kValid, dims({6300, 0}), t, t, nullptr) == 0,
              "RelationPropagation enqueue with D = 0 succeeds");
    }
    // A real problem without the workspace getWorkspaceSize asked for is
    // refused by the launcher, before any CUDA call.
    mark = gLogger.size();
    CHECK(enqueue(kSigma, kRegions, kValid, kRegions, DataType::kFLOAT, DataType::kFLOAT, nullptr) != 0,
          "RelationPropagation enqueue without a workspace is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "invalid argument", "no workspace"}),
          "the missing workspace is logged");
    mark = gLogger.size();
    CHECK(enqueue(dims({0, 256}), dims({0, 1024}), dims({0}), dims({0, 1024}), DataType::kFLOAT, DataType::kBOOL,
                  nullptr) != 0,
          "RelationPropagation enqueue refuses a kBOOL valid");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "valid kBOOL"}), "the type mix is logged");
    mark = gLogger.size();
    CHECK(enqueue(dims({0, 256}), dims({0, 1024}), dims({0}), dims({0, 512}), DataType::kFLOAT, DataType::kFLOAT,
                  nullptr) != 0,
          "RelationPropagation enqueue refuses an output of the wrong D");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "[0, 512]"}), "the enqueue refusal is logged");
    CHECK(enqueue(dims({0, 256}), dims({0, 1024}), dims({0}), dims({0, 1024}), DataType::kINT8, DataType::kINT8,
                  nullptr) != 0,
          "RelationPropagation enqueue refuses INT8");
}

void testSerializationAndClone(IPluginCreatorV3One& creator, Plugin& original) {
    CHECK(serializesNothing(*original.runtime), "RelationPropagation serializes an empty field collection");
    checkRestoreAndCopies(creator, original, "RelationPropagation", kName, [](Plugin& copy) {
        using P = std::pair<DataType, TensorFormat>;
        const P f16{DataType::kHALF, TensorFormat::kLINEAR};
        // The copy still answers format queries, not only identity ones.
        return serializesNothing(*copy.runtime) && acceptsCombination(*copy.build, {f16, f16, f16, f16, f16});
    });
}

void testCreation(IPluginCreatorV3One& creator) {
    {
        Plugin p = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kBUILD));
        CHECK(static_cast<bool>(p), "RelationPropagation: a null field collection is fine (there are no fields)");
        Plugin q = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kRUNTIME));
        CHECK(static_cast<bool>(q), "RelationPropagation: ... at run time too");
    }
    // What the ONNX parser may forward, and anything a newer exporter adds.
    const char version[] = "1";
    const char ns[] = "vidtrt";
    int32_t other = 3;
    Fields f{{PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
              PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 6),
              PluginField("something_newer", &other, PluginFieldType::kINT32, 1)}};
    const size_t mark = gLogger.size();
    Plugin p = makePlugin(creator, f);
    CHECK(p && sameIdentity(*p.core) && serializesNothing(*p.runtime),
          "RelationPropagation: unknown fields are ignored");
    CHECK(!gLogger.anySince(mark, Severity::kERROR), "RelationPropagation: unknown fields are not reported as errors");
    CHECK(gLogger.loggedSince(mark, Severity::kVERBOSE, {"relprop_test", "ignoring field 'something_newer'"}),
          "RelationPropagation: ignored fields are logged at verbose level with the layer name");
}

void testWithoutLogger(IPluginV3OneBuild& build, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*),
                       nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(nullptr);
    const size_t mark = gLogger.size();
    const DataType bf16[4] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kBF16};
    DataType out[1];
    CHECK(build.getOutputDataTypes(out, 1, bf16, 4) != 0, "BF16 is refused without a logger too");
    CHECK(gLogger.size() == mark, "nothing from RelationPropagation reaches a detached logger");
    setLoggerFinder(finder);
}

// Finds the creator among getCreators' table itself, so main() needs one line.
void run(IPluginCreatorInterface* const* creators, int32_t nbCreators,
         void (*setLoggerFinder)(nvinfer1::ILoggerFinder*), nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(finder);
    IPluginCreatorV3One* creator = &findCreator(creators, nbCreators, kName);
    relprop::testCreatorIdentity(*creator);
    Plugin plugin = makePlugin(*creator, Fields{});
    if (!plugin) fatal("RelationPropagation createPlugin(kBUILD) did not return a plugin with all capabilities");
    relprop::testInterfaces(plugin);
    relprop::testWorkspace(*plugin.build);
    relprop::testOutputTypes(*plugin.build);
    relprop::testFormats(*plugin.build);
    relprop::testOutputShapes(*plugin.build);
    relprop::testConfigure(*plugin.build);
    relprop::testRuntime(*plugin.runtime);
    relprop::testWithoutLogger(*plugin.build, setLoggerFinder, finder);
    relprop::testSerializationAndClone(*creator, plugin);
    relprop::testCreation(*creator);
}

}  // namespace relprop

// ---------------------------------------------------------------- FixedSizeNMS
//
// The same walk through the TensorRT interfaces for the NMS creator. Unlike
// the others it mixes types (kFLOAT boxes and scores, a kINT32 output), offers
// no FP16, has a constant output shape ([max_output], whatever K) and a
// workspace that grows with K² (the suppression mask).

namespace nms {

constexpr const char* kName = "FixedSizeNMS";
constexpr const char* kIouThreshold = "iou_threshold";
constexpr const char* kMaxOutput = "max_output";
constexpr int64_t kMaxBoxes = 65536;  // fixed_size_nms_kernel.h

struct Params {
    float iouThreshold;
    int32_t maxOutput;
};

// Owns the values its fields point to, so a Params temporary cannot dangle.
struct ParamFields {
    explicit ParamFields(Params p) : values(p) {}
    Params values;
    Fields fields() const {
        return Fields{{PluginField(kIouThreshold, &values.iouThreshold, PluginFieldType::kFLOAT32, 1),
                       PluginField(kMaxOutput, &values.maxOutput, PluginFieldType::kINT32, 1)}};
    }
};

const Params kRpn{0.7F, 300};  // an RPN's proposal NMS: IoU 0.7, 300 survivors
const Dims kBoxes = dims({3840, 4});
const Dims kScores = dims({3840});
const Dims kKeep = dims({300});

Plugin makePlugin(IPluginCreatorV3One& creator, const Fields& f, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    return createLayer(creator, f, phase, "nms_test");
}

Plugin makePlugin(IPluginCreatorV3One& creator, Params p, TensorRTPhase phase = TensorRTPhase::kBUILD) {
    const ParamFields pf(p);
    return makePlugin(creator, pf.fields(), phase);
}

// The serialized fields, exactly {iou_threshold: kFLOAT32, max_output: kINT32}
// in that order, equal to `want`.
bool serializedEquals(IPluginV3OneRuntime& runtime, Params want) {
    const PluginFieldCollection* fc = runtime.getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 2 || fc->fields == nullptr) return false;
    const std::pair<const char*, PluginFieldType> expected[2] = {{kIouThreshold, PluginFieldType::kFLOAT32},
                                                                 {kMaxOutput, PluginFieldType::kINT32}};
    for (int32_t i = 0; i < 2; ++i) {
        const PluginField& f = fc->fields[i];
        if (f.name == nullptr || std::strcmp(f.name, expected[i].first) != 0 || f.type != expected[i].second ||
            f.length != 1 || f.data == nullptr) {
            return false;
        }
    }
    Params got{};
    std::memcpy(&got.iouThreshold, fc->fields[0].data, sizeof(float));
    std::memcpy(&got.maxOutput, fc->fields[1].data, sizeof(int32_t));
    return got.iouThreshold == want.iouThreshold && got.maxOutput == want.maxOutput;
}

const std::vector<Dims> kFormatShapes = {dims({40, 4}), dims({40}), dims({10})};

bool acceptsCombination(IPluginV3OneBuild& build, std::initializer_list<std::pair<DataType, TensorFormat>> io) {
    return acceptsCombinationOf(build, kFormatShapes, 2, io);
}

// Bytes of the device workspace, written out independently of the plugin:
// sorted boxes (16 B per box), areas and indices (4 B each) and the mask
// (K rows of ceil(K / 64) 8-byte words), each rounded up to 256 bytes.
size_t expectedWorkspace(int64_t k) {
    auto up = [](int64_t bytes) { return static_cast<size_t>((bytes + 255) / 256 * 256); };
    const int64_t words = (k + 63) / 64;
    return up(16 * k) + up(4 * k) + up(4 * k) + up(8 * k * words);
}

void testCreatorIdentity(IPluginCreatorV3One& creator) {
    checkCreatorIdentity(creator, "FixedSizeNMS", kName,
                         {{kIouThreshold, PluginFieldType::kFLOAT32}, {kMaxOutput, PluginFieldType::kINT32}});
}

void testInterfaces(const Plugin& p) {
    checkInterfaces(p, "FixedSizeNMS", kName);
    const char* meta = p.build->getMetadataString();
    CHECK(meta != nullptr && contains(meta, "iou_threshold=0.7") && contains(meta, "max_output=300"),
          "FixedSizeNMS metadata names both attributes");
}

void testWorkspace(IPluginV3OneBuild& build) {
    auto workspace = [&](int64_t maxK) {
        // min and opt are small on purpose: only the profile's maximum counts.
        DynamicPluginTensorDesc in[2] = {dynDesc(dims({-1, 4})), dynDesc(dims({-1}))};
        in[0].max = dims({maxK, 4});
        in[1].max = dims({maxK});
        DynamicPluginTensorDesc out[1] = {dynDesc(kKeep)};
        return build.getWorkspaceSize(in, 2, out, 1);
    };
    const size_t rpn = workspace(3840);
    CHECK(rpn == expectedWorkspace(3840), "FixedSizeNMS workspace at K = 3840 holds the sorted boxes and the mask");
    CHECK(rpn >= size_t(3840) * 3840 / 8, "the workspace covers K² bits of mask");
    CHECK(workspace(1) == expectedWorkspace(1), "FixedSizeNMS workspace at K = 1");
    CHECK(workspace(65) == expectedWorkspace(65) && workspace(65) > workspace(64),
          "a 65th box adds a mask word to every row");
    CHECK(workspace(0) == 0, "FixedSizeNMS: an empty profile needs no workspace");
    CHECK(workspace(kMaxBoxes + 1000) == expectedWorkspace(kMaxBoxes),
          "FixedSizeNMS: the workspace stops growing at the largest K it accepts");
    CHECK(build.getWorkspaceSize(nullptr, 0, nullptr, 0) == 0, "FixedSizeNMS: no descriptors, no workspace");
}

void testOutputTypes(IPluginV3OneBuild& build) {
    const DataType f32[2] = {DataType::kFLOAT, DataType::kFLOAT};
    DataType out[1] = {DataType::kFLOAT};
    CHECK(build.getOutputDataTypes(out, 1, f32, 2) == 0 && out[0] == DataType::kINT32,
          "FixedSizeNMS: kFLOAT boxes and scores give a kINT32 keep");
    auto refused = [&](DataType boxes, DataType scores, const char* logged, const std::string& what) {
        const size_t mark = gLogger.size();
        const DataType in[2] = {boxes, scores};
        DataType o[1];
        CHECK(build.getOutputDataTypes(o, 1, in, 2) != 0, "FixedSizeNMS getOutputDataTypes refuses " + what);
        CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"FixedSizeNMS", logged, "kFLOAT"}),
              "FixedSizeNMS: the refused " + what + " is logged");
    };
    refused(DataType::kHALF, DataType::kHALF, "kHALF", "FP16 (coordinates stay FP32)");
    refused(DataType::kFLOAT, DataType::kHALF, "kHALF", "FP16 scores");
    refused(DataType::kBF16, DataType::kBF16, "kBF16", "BF16");
    refused(DataType::kINT32, DataType::kFLOAT, "kINT32", "INT32 boxes");
    const DataType three[3] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    DataType o[1];
    CHECK(build.getOutputDataTypes(o, 1, three, 3) != 0, "FixedSizeNMS getOutputDataTypes refuses 3 inputs");
    CHECK(build.getOutputDataTypes(o, 2, f32, 2) != 0, "FixedSizeNMS getOutputDataTypes refuses 2 outputs");
}

void testFormats(IPluginV3OneBuild& build) {
    using P = std::pair<DataType, TensorFormat>;
    const auto F32 = P{DataType::kFLOAT, TensorFormat::kLINEAR};
    const auto F16 = P{DataType::kHALF, TensorFormat::kLINEAR};
    const auto I32 = P{DataType::kINT32, TensorFormat::kLINEAR};
    const auto I64 = P{DataType::kINT64, TensorFormat::kLINEAR};
    CHECK(acceptsCombination(build, {F32, F32, I32}), "FixedSizeNMS: FP32 boxes and scores with an INT32 keep");
    CHECK(!acceptsCombination(build, {F32, F32, F32}), "FixedSizeNMS: an FP32 keep is refused");
    CHECK(!acceptsCombination(build, {F32, F32, I64}), "FixedSizeNMS: an INT64 keep is refused");
    CHECK(!acceptsCombination(build, {F16, F16, I32}), "FixedSizeNMS: FP16 boxes and scores are refused");
    CHECK(!acceptsCombination(build, {F32, F16, I32}), "FixedSizeNMS: FP16 scores are refused");
    CHECK(!acceptsCombination(build, {I32, F32, I32}), "FixedSizeNMS: INT32 boxes are refused");
    const auto F32hwc = P{DataType::kFLOAT, TensorFormat::kHWC};
    CHECK(!acceptsCombination(build, {F32hwc, F32, I32}), "FixedSizeNMS: kHWC boxes are refused");
    const auto I32chw4 = P{DataType::kINT32, TensorFormat::kCHW4};
    CHECK(!acceptsCombination(build, {F32, F32, I32chw4}), "FixedSizeNMS: a vectorized keep is refused");

    std::vector<DynamicPluginTensorDesc> io = {dynDesc(dims({40, 4})), dynDesc(dims({40})),
                                               dynDesc(dims({10}), DataType::kINT32)};
    CHECK(!build.supportsFormatCombination(3, io.data(), 2, 1),
          "FixedSizeNMS: position past the last output is refused");
    CHECK(!build.supportsFormatCombination(-1, io.data(), 2, 1), "FixedSizeNMS: negative position is refused");
    CHECK(!build.supportsFormatCombination(0, io.data(), 1, 2), "FixedSizeNMS: a 1-input 2-output layer is refused");
    CHECK(!build.supportsFormatCombination(0, nullptr, 2, 1), "FixedSizeNMS: null descriptors are refused");
}

void testOutputShapes(IPluginV3OneBuild& build) {
    FakeExprBuilder eb;
    DimsExprs out[1]{};
    DimsExprs in[2] = {eb.dims({3840, 4}), eb.dims({3840})};
    CHECK(build.getOutputShapes(in, 2, nullptr, 0, out, 1, eb) == 0, "FixedSizeNMS getOutputShapes on constants");
    CHECK(constantDims(out[0], {300}), "keep is [max_output] = [300]");

    DimsExprs sym[2] = {eb.dims({-1, 4}), eb.dims({-1})};
    CHECK(build.getOutputShapes(sym, 2, nullptr, 0, out, 1, eb) == 0, "FixedSizeNMS getOutputShapes on symbols");
    CHECK(constantDims(out[0], {300}), "keep stays [300] when K is dynamic (no data-dependent shape)");

    DimsExprs small[2] = {eb.dims({5, 4}), eb.dims({5})};
    CHECK(build.getOutputShapes(small, 2, nullptr, 0, out, 1, eb) == 0 && constantDims(out[0], {300}),
          "keep stays [300] when K < max_output");

    size_t mark = gLogger.size();
    DimsExprs badColumns[2] = {eb.dims({3840, 5}), eb.dims({3840})};
    CHECK(build.getOutputShapes(badColumns, 2, nullptr, 0, out, 1, eb) != 0, "boxes [K, 5] are refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"5 columns", "[K, 4]"}), "the boxes width is logged");

    mark = gLogger.size();
    DimsExprs badK[2] = {eb.dims({3840, 4}), eb.dims({3839})};
    CHECK(build.getOutputShapes(badK, 2, nullptr, 0, out, 1, eb) != 0, "a constant K mismatch is refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"3840", "3839"}), "both K are logged");

    mark = gLogger.size();
    DimsExprs tooMany[2] = {eb.dims({kMaxBoxes + 1, 4}), eb.dims({kMaxBoxes + 1})};
    CHECK(build.getOutputShapes(tooMany, 2, nullptr, 0, out, 1, eb) != 0, "more than 65536 boxes are refused early");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"65537", "at most 65536"}), "the box count is logged");

    mark = gLogger.size();
    DimsExprs flat[2] = {eb.dims({3840}), eb.dims({3840})};
    CHECK(build.getOutputShapes(flat, 2, nullptr, 0, out, 1, eb) != 0, "rank-1 boxes are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"boxes", "rank 1"}), "the boxes rank is logged");

    mark = gLogger.size();
    DimsExprs scores2[2] = {eb.dims({3840, 4}), eb.dims({3840, 1})};
    CHECK(build.getOutputShapes(scores2, 2, nullptr, 0, out, 1, eb) != 0, "rank-2 scores are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"scores", "rank 2"}), "the scores rank is logged");
}

void testConfigure(IPluginV3OneBuild& build) {
    auto configure = [&](Dims b, Dims s, Dims k) {
        DynamicPluginTensorDesc in[2] = {dynDesc(b), dynDesc(s)};
        DynamicPluginTensorDesc out[1] = {dynDesc(k, DataType::kINT32)};
        return build.configurePlugin(in, 2, out, 1);
    };
    CHECK(configure(kBoxes, kScores, kKeep) == 0, "FixedSizeNMS: consistent dims configure");
    CHECK(configure(dims({-1, 4}), dims({-1}), kKeep) == 0, "FixedSizeNMS: build-time wildcards configure");
    CHECK(configure(dims({0, 4}), dims({0}), kKeep) == 0, "FixedSizeNMS: an empty box set configures");
    CHECK(configure(dims({kMaxBoxes, 4}), dims({kMaxBoxes}), kKeep) == 0, "FixedSizeNMS: 65536 boxes configure");

    size_t mark = gLogger.size();
    CHECK(configure(dims({3840, 5}), kScores, kKeep) != 0, "FixedSizeNMS: boxes [3840, 5] are refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"configurePlugin", "[3840, 5]", "[K, 4]"}),
          "the boxes shape is logged");

    mark = gLogger.size();
    CHECK(configure(kBoxes, dims({3000}), kKeep) != 0, "FixedSizeNMS: a K mismatch is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"disagree on K", "[3840, 4]", "[3000]"}),
          "the K mismatch is logged with both shapes");

    mark = gLogger.size();
    CHECK(configure(kBoxes, kScores, dims({299})) != 0, "FixedSizeNMS: a keep of the wrong length is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"keep", "[299]", "[300]"}), "the keep mismatch is logged");

    mark = gLogger.size();
    CHECK(configure(dims({kMaxBoxes + 1, 4}), dims({kMaxBoxes + 1}), kKeep) != 0,
          "FixedSizeNMS: 65537 boxes are refused by configurePlugin");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"65537", "more than 65536"}), "the box count is logged");

    mark = gLogger.size();
    CHECK(configure(kBoxes, kScores, dims({1, 300})) != 0, "FixedSizeNMS: a rank-2 keep is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"keep", "rank 2"}), "the keep rank is logged");

    DynamicPluginTensorDesc in[3] = {dynDesc(kBoxes), dynDesc(kScores), dynDesc(kScores)};
    DynamicPluginTensorDesc out[1] = {dynDesc(kKeep, DataType::kINT32)};
    CHECK(build.configurePlugin(in, 3, out, 1) != 0, "FixedSizeNMS: three inputs are refused by configurePlugin");
}

void testRuntime(IPluginV3OneRuntime& runtime) {
    auto shapeChange = [&](Dims b, Dims s, Dims k) {
        PluginTensorDesc in[2] = {desc(b), desc(s)};
        PluginTensorDesc out[1] = {desc(k, DataType::kINT32)};
        return runtime.onShapeChange(in, 2, out, 1);
    };
    CHECK(shapeChange(kBoxes, kScores, kKeep) == 0, "FixedSizeNMS onShapeChange accepts consistent dims");
    size_t mark = gLogger.size();
    CHECK(shapeChange(kBoxes, dims({12}), kKeep) != 0, "FixedSizeNMS onShapeChange refuses a K mismatch");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"onShapeChange", "disagree on K"}), "the K mismatch is logged");
    CHECK(shapeChange(dims({-1, 4}), dims({-1}), kKeep) != 0, "FixedSizeNMS onShapeChange refuses unresolved extents");

    // Every K, even 0, launches a kernel (keep is filled with -1), so no
    // enqueue here may pass validation: these are the refusals that come
    // before any CUDA call.
    auto enqueue = [&](Dims b, Dims s, Dims k, DataType boxesType, DataType keepType, void* workspace) {
        PluginTensorDesc in[2] = {desc(b, boxesType), desc(s, boxesType)};
        PluginTensorDesc out[1] = {desc(k, keepType)};
        const void* inputs[2] = {nullptr, nullptr};
        void* outputs[1] = {nullptr};
        return runtime.enqueue(in, out, inputs, outputs, workspace, nullptr);
    };
    mark = gLogger.size();
    CHECK(enqueue(kBoxes, kScores, kKeep, DataType::kFLOAT, DataType::kINT32, nullptr) != 0,
          "FixedSizeNMS enqueue without a workspace is refused");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "invalid argument", "no workspace"}),
          "the missing workspace is logged");
    mark = gLogger.size();
    CHECK(enqueue(kBoxes, kScores, kKeep, DataType::kHALF, DataType::kINT32, nullptr) != 0,
          "FixedSizeNMS enqueue refuses FP16 boxes");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "kHALF", "kFLOAT"}), "the FP16 boxes are logged");
    mark = gLogger.size();
    CHECK(enqueue(kBoxes, kScores, kKeep, DataType::kFLOAT, DataType::kFLOAT, nullptr) != 0,
          "FixedSizeNMS enqueue refuses an FP32 keep");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "keep kFLOAT", "kINT32"}), "the keep type is logged");
    mark = gLogger.size();
    CHECK(enqueue(kBoxes, kScores, dims({301}), DataType::kFLOAT, DataType::kINT32, nullptr) != 0,
          "FixedSizeNMS enqueue refuses a keep of the wrong length");
    CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"enqueue", "[301]"}), "the enqueue refusal is logged");
}

void testSerializationAndClone(IPluginCreatorV3One& creator, Plugin& original) {
    CHECK(serializedEquals(*original.runtime, kRpn),
          "getFieldsToSerialize holds iou_threshold 0.7 (kFLOAT32) and max_output 300 (kINT32)");
    for (Params p : {Params{0.3F, 100}, Params{0.5F, 1}, Params{-0.25F, 7}, Params{1.5F, 65536}}) {
        Plugin q = makePlugin(creator, p);
        CHECK(q && serializedEquals(*q.runtime, p), "FixedSizeNMS attribute round trip for max_output " +
                                                        std::to_string(p.maxOutput));
    }
    checkRestoreAndCopies(creator, original, "FixedSizeNMS", kName, [](Plugin& copy) {
        using P = std::pair<DataType, TensorFormat>;
        const P f32{DataType::kFLOAT, TensorFormat::kLINEAR};
        const P i32{DataType::kINT32, TensorFormat::kLINEAR};
        // The copy still answers format queries, not only identity ones.
        return serializedEquals(*copy.runtime, kRpn) && acceptsCombination(*copy.build, {f32, f32, i32});
    });
}

void testCreationErrors(IPluginCreatorV3One& creator) {
    auto refusedAndLogged = [&](const Fields& f, std::initializer_list<const char*> parts, const std::string& what,
                                TensorRTPhase phase = TensorRTPhase::kBUILD) {
        checkRefused(creator, "nms_test", f, parts, "FixedSizeNMS " + what, phase);
    };
    const ParamFields good(kRpn);

    // Out of range.
    refusedAndLogged(ParamFields({0.7F, 0}).fields(), {"max_output", "0", "range"}, "max_output = 0");
    refusedAndLogged(ParamFields({0.7F, -5}).fields(), {"max_output", "-5", "range"}, "max_output = -5");
    refusedAndLogged(ParamFields({NAN, 300}).fields(), {"iou_threshold", "nan", "range"}, "iou_threshold = nan");
    refusedAndLogged(ParamFields({INFINITY, 300}).fields(), {"iou_threshold", "inf", "range"}, "iou_threshold = inf");

    // Wrong types, lengths, data.
    double asDouble = 0.7;
    refusedAndLogged(withField(good, 0, PluginField(kIouThreshold, &asDouble, PluginFieldType::kFLOAT64, 1)),
                     {"iou_threshold", "kFLOAT32", "kFLOAT64"}, "iou_threshold as kFLOAT64");
    int64_t asInt64 = 300;
    refusedAndLogged(withField(good, 1, PluginField(kMaxOutput, &asInt64, PluginFieldType::kINT64, 1)),
                     {"max_output", "kINT32", "kINT64"}, "max_output as kINT64");
    float asFloat = 300.0F;
    refusedAndLogged(withField(good, 1, PluginField(kMaxOutput, &asFloat, PluginFieldType::kFLOAT32, 1)),
                     {"max_output", "kINT32", "kFLOAT32"}, "max_output as kFLOAT32");
    float pair[2] = {0.7F, 0.5F};
    refusedAndLogged(withField(good, 0, PluginField(kIouThreshold, pair, PluginFieldType::kFLOAT32, 2)),
                     {"iou_threshold", "length 2"}, "iou_threshold with two values");
    refusedAndLogged(withField(good, 1, PluginField(kMaxOutput, nullptr, PluginFieldType::kINT32, 1)),
                     {"max_output", "no data"}, "max_output without data");

    // Missing: no default in either phase.
    const char* names[2] = {kIouThreshold, kMaxOutput};
    for (size_t i = 0; i < 2; ++i) {
        for (TensorRTPhase phase : {TensorRTPhase::kBUILD, TensorRTPhase::kRUNTIME}) {
            refusedAndLogged(without(good, i), {names[i], "missing"},
                             std::string("missing ") + names[i] +
                                 (phase == TensorRTPhase::kBUILD ? " at build time" : " at run time"),
                             phase);
        }
    }
    {
        const size_t mark = gLogger.size();
        Plugin p = wrap(creator.createPlugin("no_fields", nullptr, TensorRTPhase::kBUILD));
        CHECK(!p.owner, "FixedSizeNMS: a null field collection is refused");
        CHECK(gLogger.loggedSince(mark, Severity::kERROR, {"no_fields", "missing"}),
              "FixedSizeNMS: the refusal names the layer and the missing field");
    }

    // What the ONNX parser may forward besides the two attributes, in any order.
    {
        const ParamFields p({0.5F, 100});
        const char version[] = "1";
        const char ns[] = "vidtrt";
        int32_t other = 3;
        Fields f = p.fields();
        f.fields.insert(f.fields.begin(), PluginField("plugin_version", version, PluginFieldType::kCHAR, 1));
        f.fields.push_back(PluginField("plugin_namespace", ns, PluginFieldType::kCHAR, 6));
        f.fields.push_back(PluginField("something_newer", &other, PluginFieldType::kINT32, 1));
        std::swap(f.fields[1], f.fields[2]);
        const size_t mark = gLogger.size();
        Plugin q = makePlugin(creator, f);
        CHECK(q && serializedEquals(*q.runtime, p.values), "FixedSizeNMS: unknown fields are ignored, order is free");
        CHECK(!gLogger.anySince(mark, Severity::kERROR), "FixedSizeNMS: unknown fields are not reported as errors");
        CHECK(gLogger.loggedSince(mark, Severity::kVERBOSE, {"nms_test", "ignoring field 'something_newer'"}),
              "FixedSizeNMS: ignored fields are logged at verbose level with the layer name");
    }
}

void testWithoutLogger(IPluginCreatorV3One& creator, void (*setLoggerFinder)(nvinfer1::ILoggerFinder*),
                       nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(nullptr);
    const size_t mark = gLogger.size();
    Plugin p = makePlugin(creator, Params{0.7F, 0});
    CHECK(!p.owner, "FixedSizeNMS: invalid max_output is refused without a logger too");
    CHECK(gLogger.size() == mark, "nothing from FixedSizeNMS reaches a detached logger");
    setLoggerFinder(finder);
}

// Finds the creator among getCreators' table itself, so main() needs one line.
void run(IPluginCreatorInterface* const* creators, int32_t nbCreators,
         void (*setLoggerFinder)(nvinfer1::ILoggerFinder*), nvinfer1::ILoggerFinder* finder) {
    setLoggerFinder(finder);
    IPluginCreatorV3One* creator = &findCreator(creators, nbCreators, kName);
    nms::testCreatorIdentity(*creator);
    Plugin plugin = makePlugin(*creator, kRpn);
    if (!plugin) fatal("FixedSizeNMS createPlugin(iou_threshold=0.7, max_output=300, kBUILD) failed");
    nms::testInterfaces(plugin);
    nms::testWorkspace(*plugin.build);
    nms::testOutputTypes(*plugin.build);
    nms::testFormats(*plugin.build);
    nms::testOutputShapes(*plugin.build);
    nms::testConfigure(*plugin.build);
    nms::testRuntime(*plugin.runtime);
    nms::testWithoutLogger(*creator, setLoggerFinder, finder);
    nms::testSerializationAndClone(*creator, plugin);
    nms::testCreationErrors(*creator);
}

}  // namespace nms

}  // namespace

// ---------------------------------------------------------------- library info
//
// vidtrtPluginLibraryInfo() is what Python reads (with ctypes, no TensorRT) to
// learn which TensorRT the library was built for and which creators it has:
// "tensorrt=<major>.<minor>;creators=<name>:<version>:<namespace>,...".

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t at = s.find(sep); at != std::string::npos; at = s.find(sep, start)) {
        parts.push_back(s.substr(start, at - start));
        start = at + 1;
    }
    parts.push_back(s.substr(start));
    return parts;
}

// The info string must name the TensorRT of the headers this test (built in
// the same CMake build as the library) was compiled with, and list exactly
// getCreators()' creators, in order, as name:version:namespace.
void testLibraryInfo(const char* (*libraryInfo)(), IPluginCreatorInterface* const* creators, int32_t nbCreators) {
    const char* raw = libraryInfo();
    CHECK(raw != nullptr, "vidtrtPluginLibraryInfo returns a string");
    if (raw == nullptr) return;
    CHECK(libraryInfo() == raw, "vidtrtPluginLibraryInfo returns the same string every call");
    const std::string info(raw);
    const std::vector<std::string> sections = split(info, ';');
    CHECK(sections.size() == 2, "info has two sections: " + info);
    if (sections.size() != 2) return;

    const std::string wantVersion =
        "tensorrt=" + std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR);
    CHECK(sections[0] == wantVersion, "info records the headers' TensorRT (" + wantVersion + "): " + sections[0]);

    const std::string creatorsKey = "creators=";
    CHECK(sections[1].compare(0, creatorsKey.size(), creatorsKey) == 0, "second section is creators=: " + sections[1]);
    const std::vector<std::string> listed = split(sections[1].substr(creatorsKey.size()), ',');

    std::vector<std::string> registered;  // what getCreators() hands TensorRT
    for (int32_t i = 0; creators != nullptr && i < nbCreators; ++i) {
        if (creators[i] == nullptr || std::string(creators[i]->getInterfaceInfo().kind) != "PLUGIN CREATOR_V3ONE") {
            registered.push_back("(not an IPluginCreatorV3One)");
            continue;
        }
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        const std::string name = c->getPluginName();
        const std::string version = c->getPluginVersion();
        const std::string ns = c->getPluginNamespace();
        // The separators cannot be escaped, so a name holding one would be misread.
        for (const std::string& part : {name, version, ns}) {
            CHECK(part.find_first_of(":,;=") == std::string::npos && !part.empty(),
                  "creator identity part '" + part + "' is non-empty and free of ':,;='");
        }
        registered.push_back(name + ":" + version + ":" + ns);
    }
    CHECK(listed == registered, "info lists exactly getCreators()' creators, in order: " + info);
}

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s path/to/libvidtrt_plugins.so\n", argv[0]);
        return 2;
    }
    const char* path = argv[1];
    testLibraryFile(path);

    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) fatal(std::string("dlopen failed: ") + dlerror());

    // The signatures TensorRT's loader expects (see trtexec --dynamicPlugins).
    using GetCreatorsFn = IPluginCreatorInterface* const* (*)(int32_t&);
    using SetLoggerFinderFn = void (*)(nvinfer1::ILoggerFinder*);
    using LibraryInfoFn = const char* (*)();
    auto getCreators = reinterpret_cast<GetCreatorsFn>(dlsym(handle, "getCreators"));
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinderFn>(dlsym(handle, "setLoggerFinder"));
    auto libraryInfo = reinterpret_cast<LibraryInfoFn>(dlsym(handle, "vidtrtPluginLibraryInfo"));
    CHECK(getCreators != nullptr, "dlsym finds getCreators");
    CHECK(setLoggerFinder != nullptr, "dlsym finds setLoggerFinder");
    CHECK(libraryInfo != nullptr, "dlsym finds vidtrtPluginLibraryInfo");
    if (getCreators == nullptr || setLoggerFinder == nullptr) fatal("entry points missing");

    TestLoggerFinder finder(&gLogger);
    setLoggerFinder(&finder);

    int32_t nbCreators = -1;
    IPluginCreatorInterface* const* creators = getCreators(nbCreators);
    CHECK(creators != nullptr && nbCreators >= 1, "getCreators returns at least one creator");
    int32_t again = -1;
    CHECK(getCreators(again) == creators && again == nbCreators, "getCreators is stable across calls");
    if (libraryInfo != nullptr) testLibraryInfo(libraryInfo, creators, nbCreators);

    IPluginCreatorV3One* psla = nullptr;
    int32_t pslaCount = 0;
    IPluginCreatorV3One* psRoiAlign = nullptr;
    int32_t psRoiAlignCount = 0;
    for (int32_t i = 0; creators != nullptr && i < nbCreators; ++i) {
        CHECK(creators[i] != nullptr, "creator " + std::to_string(i) + " is not null");
        if (creators[i] == nullptr) continue;
        // The registry tells creator generations apart by interface kind before
        // downcasting; IPluginCreatorInterface itself carries no name.
        const nvinfer1::InterfaceInfo info = creators[i]->getInterfaceInfo();
        CHECK(std::string(info.kind) == "PLUGIN CREATOR_V3ONE", "every creator is an IPluginCreatorV3One");
        if (std::string(info.kind) != "PLUGIN CREATOR_V3ONE") continue;
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::string(c->getPluginName()) == kName && std::string(c->getPluginNamespace()) == kNamespace) {
            psla = c;
            ++pslaCount;
        }
        if (std::string(c->getPluginName()) == psroi::kName && std::string(c->getPluginNamespace()) == kNamespace) {
            psRoiAlign = c;
            ++psRoiAlignCount;
        }
    }
    CHECK(pslaCount == 1, "exactly one PSLA creator in namespace vidtrt");
    if (psla == nullptr) fatal("no PSLA creator");

    testCreatorIdentity(*psla);

    int32_t md = 4;
    Plugin plugin = create(*psla, Fields{{PluginField(kField, &md, PluginFieldType::kINT32, 1)}});
    if (!plugin) fatal("createPlugin(max_disp=4, kBUILD) did not return a plugin with all capabilities");
    testInterfaces(plugin);
    testOutputTypes(*plugin.build);
    testFormats(*plugin.build);
    testOutputShapes(*plugin.build);
    testConfigure(*plugin.build);
    testRuntime(*plugin.runtime);
    testSerializationAndClone(*psla, plugin);
    testCreationErrors(*psla);
    testWithoutLogger(*psla, setLoggerFinder);

    CHECK(psRoiAlignCount == 1, "exactly one PSRoIAlign creator in namespace vidtrt");
    if (psRoiAlign == nullptr) fatal("no PSRoIAlign creator");
    psroi::run(*psRoiAlign, setLoggerFinder, &finder);
    msra::run(creators, nbCreators, setLoggerFinder, &finder);
    relprop::run(creators, nbCreators, setLoggerFinder, &finder);
    nms::run(creators, nbCreators, setLoggerFinder, &finder);

    // TensorRT's deregisterLibrary unloads the library; make sure that works
    // once every plugin object is gone.
    setLoggerFinder(nullptr);
    CHECK(dlclose(handle) == 0, "dlclose succeeds");
    return finish();
}
