# Reads plugins/vidtrt_ops.def, the list of custom ops, and derives what CMake
# compiles for each op. CMakeLists.txt includes this file; tests run it as a
# script, which needs no compiler:
#   cmake [-DVIDTRT_SOURCE_DIR=<repository root>] -P plugins/vidtrt_ops.cmake
# prints the derived lists, or fails like a configuration would.
if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  cmake_minimum_required(VERSION 3.24)  # a script has no project to set the policies
endif()

# vidtrt_read_op_table(<source dir>) sets in the caller's scope
#   VIDTRT_OPS                  the op directories, in the .def file's order
#   VIDTRT_HOST_KERNEL_SOURCES  plugins/<op>/<op>_host.cpp    (host kernel library)
#   VIDTRT_CUDA_KERNEL_SOURCES  plugins/<op>/<op>_cuda.cu     (CUDA kernel library)
#   VIDTRT_PLUGIN_SOURCES       plugins/<op>/<op>_plugin.cpp  (plugin library)
# as paths relative to <source dir>. A malformed line, an op listed twice or a
# missing source file is a FATAL_ERROR that names the line or the files.
function(vidtrt_read_op_table source_dir)
  set(def_file "${source_dir}/plugins/vidtrt_ops.def")
  if(NOT EXISTS "${def_file}")
    message(FATAL_ERROR "vidtrt: ${def_file} is missing; it lists the custom ops to build")
  endif()
  # The same form as the C++ macro expects and vidtrt/ops/registry.py parses.
  set(name "[A-Za-z_][A-Za-z0-9_]*")
  set(line_form "^[ \t]*VIDTRT_OP\\([ \t]*(${name})[ \t]*,[ \t]*(${name})[ \t]*,[ \t]*\"([A-Za-z0-9._-]+)\"[ \t]*,[ \t]*(${name})[ \t]*\\)[ \t]*$")
  file(STRINGS "${def_file}" lines REGEX "^[ \t]*VIDTRT_OP")
  set(ops)
  set(plugin_names)
  set(host)
  set(cuda)
  set(plugin)
  set(missing)
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "${line_form}")
      message(FATAL_ERROR "vidtrt: malformed line in ${def_file}:\n  ${line}\n"
                          "expected VIDTRT_OP(directory, PluginName, \"version\", CreatorClass)")
    endif()
    set(op "${CMAKE_MATCH_1}")
    set(plugin_name "${CMAKE_MATCH_2}")
    if(op IN_LIST ops)
      message(FATAL_ERROR "vidtrt: ${def_file} lists the op directory '${op}' twice")
    endif()
    if(plugin_name IN_LIST plugin_names)
      message(FATAL_ERROR "vidtrt: ${def_file} lists the plugin name '${plugin_name}' twice")
    endif()
    list(APPEND ops "${op}")
    list(APPEND plugin_names "${plugin_name}")
    foreach(kind host cuda plugin)
      if(kind STREQUAL "host")
        set(file "plugins/${op}/${op}_host.cpp")
      elseif(kind STREQUAL "cuda")
        set(file "plugins/${op}/${op}_cuda.cu")
      else()
        set(file "plugins/${op}/${op}_plugin.cpp")
      endif()
      if(NOT EXISTS "${source_dir}/${file}")
        list(APPEND missing "${file}")
      endif()
      list(APPEND ${kind} "${file}")
    endforeach()
  endforeach()
  if(NOT ops)
    message(FATAL_ERROR "vidtrt: ${def_file} lists no op")
  endif()
  if(missing)
    list(JOIN missing "\n  " missing_lines)
    message(FATAL_ERROR "vidtrt: plugins/vidtrt_ops.def lists ops whose sources are missing:\n  ${missing_lines}\n"
                        "every op needs plugins/<op>/<op>_host.cpp, <op>_cuda.cu and <op>_plugin.cpp "
                        "(docs/ARCHITECTURE.md, \"The custom-op pattern\")")
  endif()
  set(VIDTRT_OPS "${ops}" PARENT_SCOPE)
  set(VIDTRT_HOST_KERNEL_SOURCES "${host}" PARENT_SCOPE)
  set(VIDTRT_CUDA_KERNEL_SOURCES "${cuda}" PARENT_SCOPE)
  set(VIDTRT_PLUGIN_SOURCES "${plugin}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if(NOT VIDTRT_SOURCE_DIR)
    get_filename_component(VIDTRT_SOURCE_DIR "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
  endif()
  vidtrt_read_op_table("${VIDTRT_SOURCE_DIR}")
  foreach(list VIDTRT_OPS VIDTRT_HOST_KERNEL_SOURCES VIDTRT_CUDA_KERNEL_SOURCES VIDTRT_PLUGIN_SOURCES)
    message(STATUS "${list}=${${list}}")
  endforeach()
endif()
