/* Force-included into ggml's Vulkan backend (see CMakeLists.txt).
 *
 * ggml-vulkan always chains VK_EXT_layer_settings' create-info into its
 * instance (to ask the validation layer for best-practice checks when that
 * layer is on). Vulkan headers before 1.3.261, Debian 12's 1.3.239 among
 * them, do not have the extension, so the backend does not compile there.
 * With such headers this declares the C++ names it uses, with the
 * extension's structure type and layout; a loader or driver that does not
 * know the structure skips it in the pNext chain. With newer headers it
 * declares nothing. It comes before vulkan.hpp, which those old headers
 * leave without these names. */
#ifndef LLMODEL_VULKAN_LAYER_SETTINGS_H
#define LLMODEL_VULKAN_LAYER_SETTINGS_H

#ifdef __cplusplus
#include <cstdint>
#include <vector>

#include <vulkan/vulkan_core.h>

#ifndef VK_EXT_layer_settings
namespace vk {

enum class LayerSettingTypeEXT : int32_t {
    eBool32 = 0, eInt32 = 1, eInt64 = 2, eUint32 = 3, eUint64 = 4, eFloat32 = 5, eFloat64 = 6, eString = 7
};

struct LayerSettingEXT {
    const char *pLayerName;
    const char *pSettingName;
    LayerSettingTypeEXT type;
    uint32_t valueCount;
    const void *pValues;
};

struct LayerSettingsCreateInfoEXT {
    VkStructureType sType = static_cast<VkStructureType>(1000496000); /* VK_STRUCTURE_TYPE_LAYER_SETTINGS_CREATE_INFO_EXT */
    const void *pNext = nullptr;
    uint32_t settingCount = 0;
    const LayerSettingEXT *pSettings = nullptr;

    explicit LayerSettingsCreateInfoEXT(const std::vector<LayerSettingEXT> &settings)
        : settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
};

} // namespace vk
#endif /* VK_EXT_layer_settings */
#endif /* __cplusplus */
#endif
